/* The token index's hot loop: walk the vocabulary's prefix trie through a state's byte-transition table.
 *
 * The trie is laid out in pre-order (structgen/fsm/native.py): node 0 is the root, a node's subtree is the
 * contiguous range [i, subtree_end[i]), and its children follow it at depth + 1. So a walk is one forward sweep
 * over flat arrays, and a dead byte skips its whole subtree in one jump.
 *
 * A work item (node, state) means "walk node's subtree below it, reading from state". A node whose byte leads to a
 * live state has its ending tokens allowed (a bit set in `mask`, and/or a (token, state) pair written to the
 * successor arrays). Its children are walked from that state if the state's table row is materialized; otherwise
 * the node goes back as a pending item: Python materializes those states (the automaton lives there) and calls
 * again with the pending items as the new work. So the walk never calls back into Python, and states already built
 * cost only table reads.
 *
 * Fast path (mask only): `loop` is the set of bytes (4 x 64 bits) that lead from the first work item's state back to
 * itself, and `loop_mask` the tokens made only of such bytes (the caller ORs it into `mask`). A node reached from
 * that state by such bytes alone whose subtree below holds only such bytes (`below`, per node) adds nothing new: its
 * subtree is skipped. Inside a free JSON string that leaves only the few subtrees holding a quote, a backslash or
 * a multi-byte character to walk. NULL `loop` turns the fast path off.
 *
 * Returns the number of pending items written, or -1 when a caller's buffer was too small (the caller sizes them:
 * each node is pending at most once per call, each token ends at one node).
 */
#include <stdint.h>

long trie_walk(const int32_t *table, const uint8_t *materialized,
               const uint8_t *node_byte, const uint16_t *node_depth, const int32_t *subtree_end,
               const int32_t *end_lo, const int32_t *end_ids,
               const int32_t *work_node, const int32_t *work_state, long n_work,
               uint32_t *mask,
               int32_t *succ_ids, int32_t *succ_states, long *n_succ, long succ_cap,
               int32_t *pend_node, int32_t *pend_state, long pend_cap,
               int32_t *depth_state, uint8_t *depth_pure, const uint64_t *loop, const uint64_t *below)
{
    long n_pend = 0, ns = n_succ ? *n_succ : 0;
    for (long w = 0; w < n_work; w++) {
        const int32_t root = work_node[w], stop = subtree_end[root];
        depth_state[node_depth[root]] = work_state[w];
        depth_pure[node_depth[root]] = loop != 0 && w == 0 && root == 0;
        int32_t i = root + 1;
        while (i < stop) {
            const int32_t d = node_depth[i];
            const int32_t parent = depth_state[d - 1];
            const int32_t next = table[((int64_t)parent << 8) | node_byte[i]];
            if (next < 0) {
                i = subtree_end[i];
                continue;
            }
            const uint8_t b = node_byte[i];
            const int pure = depth_pure[d - 1] && ((loop[b >> 6] >> (b & 63)) & 1);
            if (pure) {  /* this node's tokens are in loop_mask */
                const uint64_t *u = below + 4 * (int64_t)i;
                if (!((u[0] & ~loop[0]) | (u[1] & ~loop[1]) | (u[2] & ~loop[2]) | (u[3] & ~loop[3]))) {
                    i = subtree_end[i];
                    continue;
                }
                depth_state[d] = next;
                depth_pure[d] = 1;
                i++;
                continue;
            }
            for (int32_t e = end_lo[i]; e < end_lo[i + 1]; e++) {
                const int32_t tok = end_ids[e];
                if (mask)
                    mask[tok >> 5] |= 1u << (tok & 31);
                if (succ_ids) {
                    if (ns >= succ_cap)
                        return -1;
                    succ_ids[ns] = tok;
                    succ_states[ns] = next;
                    ns++;
                }
            }
            if (subtree_end[i] == i + 1) {  /* a leaf */
                i++;
                continue;
            }
            if (!materialized[next]) {
                if (n_pend >= pend_cap)
                    return -1;
                pend_node[n_pend] = i;
                pend_state[n_pend] = next;
                n_pend++;
                i = subtree_end[i];
                continue;
            }
            depth_state[d] = next;
            depth_pure[d] = 0;
            i++;
        }
    }
    if (n_succ)
        *n_succ = ns;
    return n_pend;
}
