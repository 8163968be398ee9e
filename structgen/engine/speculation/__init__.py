"""Speculation: everything that proposes tokens the target model then verifies in one forward.

proposer.py  the Proposer protocol (propose a batch, release a request) and DraftRequest
forced.py    forced runs: the text the constraint forces, as the tokenizer's own tokens (ForcedRunPlanner)
lookup.py    prompt lookup: the tokens that followed the last n-gram earlier in the request (LookupProposer)
draft_model.py  a smaller model of the same tokenizer proposes its greedy tokens (DraftModelProposer)
length.py    how many tokens to propose (AdaptiveDraftLength, DRAFT_COSTS)
drafter.py   the per-engine policy combining them (Drafter)
verify.py    the one acceptance rule the engine runs (accept)
"""
