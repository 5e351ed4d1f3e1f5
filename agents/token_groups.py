"""Named groups of a VLA prompt's tokens, read from the tokenizer: where steering may act
besides the image (agents.hooks' "text", "state" and "slots" positions)."""

from __future__ import annotations

from typing import Any

import torch

#: Vocabulary prefixes of the token groups a VLA adds (agents.action_tokens, agents.vla_model).
GROUP_PREFIXES = {"state": "<st_", "slots": "<slot_", "action": "<act_"}


def token_groups(tokenizer: Any) -> dict[str, torch.Tensor]:
    """Token ids of each named group ("state", "slots", "action") and "not_text" (ids that are
    never text: special tokens and every group's), as sorted 1-D tensors."""
    vocab = tokenizer.get_vocab()
    groups = {
        name: torch.tensor(sorted(i for t, i in vocab.items() if t.startswith(prefix)), dtype=torch.long)
        for name, prefix in GROUP_PREFIXES.items()
    }  # fmt: skip
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    groups["not_text"] = torch.tensor(
        sorted(special.union(*[set(g.tolist()) for g in groups.values()])), dtype=torch.long
    )
    return groups
