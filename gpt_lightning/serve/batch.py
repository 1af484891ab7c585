"""The running decode batch: one KV cache whose rows join and leave between steps.

Shapes in comments use: B rows in the batch, S cache slots, V vocabulary size.

Every step writes each row's next key/value at the same cache slot ``pos``, as
``generation._decode_batch`` does; what is new is that rows join at any step. A joining
prompt is prefilled as ``generate`` runs its prompts, and its keys/values are copied into
the first slots of a free row. From then on the row's keys sit in those slots plus
the slots written since it joined. An attention mask marks exactly those slots and per-row
position ids count the row's own tokens, so a row attends to what it would see alone:
GPT-2's positions are learned embeddings added to the input, so where a key sits in the
cache does not matter, only whether it is visible. Prompts that join in the same turn are
prefilled together (:meth:`DecodeBatch.prefill_many`: left-padded, one forward); their
padding slots stay masked like any other hole. (Rounding may differ from the solo run by
~1e-6, as between padded and unpadded batches in ``generation``.) A row alone whose slots are
exactly [0, pos) takes the model's mask-free path, the very computation of ``generate``.

When a joining prompt is longer than ``pos``, ``pos`` jumps ahead (the other rows get masked
slots). When the cache is full, or masked slots make up more than half of it, every row's
slots are gathered to the front (compaction). Rows and slots are allocated as needed, in
powers of two up to ``max_rows`` and ``context_length``.
"""

from __future__ import annotations

import torch

from gpt_lightning.generate.sampling import select_cache_rows
from gpt_lightning.model import GPT, KVCache


class DecodeBatch:
    """KV cache rows of sequences at different lengths, decoded one token per step."""

    def __init__(self, model: GPT, max_rows: int) -> None:
        self.model = model
        self.max_rows = max_rows
        self.context_length = model.config.context_length
        ref = model.wte.weight
        self.device, self.dtype = ref.device, ref.dtype
        self.caches: list[KVCache] = []  # one per block
        self.mask = torch.zeros(0, 0, dtype=torch.bool, device=self.device)  # (rows, slots) real keys
        self.lengths = torch.zeros(0, dtype=torch.long, device=self.device)  # (rows,) tokens in the cache
        self.size = 0  # rows in use (the first ``size`` rows)
        self.pos = 0  # the slot the next step writes

    def __len__(self) -> int:
        return self.size

    @property
    def slots(self) -> int:
        return self.mask.shape[1]

    # ---- rows in and out -----------------------------------------------------------
    def prefill(self, prompt: list[int]) -> torch.Tensor:
        """Run ``prompt`` alone (as ``generate`` does for one prompt), add it as the last
        row and return the logits (V,) of its next token. Call under ``torch.inference_mode``."""
        return self.prefill_many([prompt])[0]

    def prefill_many(self, prompts: list[list[int]]) -> torch.Tensor:
        """Prefill ``prompts`` together in one forward, add them as the last rows (in order)
        and return the logits (n, V) of their next tokens. Call under ``torch.inference_mode``.

        The prompts are left-padded to the longest, as ``generate`` pads a batch: row i's
        keys land in slots [L - P_i, L) of L, its position ids count from 0 at its first real
        token and the mask hides the padding, so each row computes what it would alone
        (up to rounding, ~1e-6). One prompt, or prompts of one length, need no padding.
        """
        n = len(prompts)
        if self.size + n > self.max_rows:
            raise RuntimeError(f"{self.size} + {n} rows would exceed max_rows={self.max_rows}")
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)  # (n,)
        L = int(lengths.max())
        idx = torch.zeros(n, L, dtype=torch.long, device=self.device)  # (n, L), left-padded
        for i, p in enumerate(prompts):
            idx[i, L - len(p):] = torch.tensor(p, device=self.device)
        real = torch.arange(L, device=self.device) >= (L - lengths).unsqueeze(1)  # (n, L)
        padded = bool((lengths < L).any())
        positions = (real.cumsum(1) - 1).clamp(min=0) if padded else None  # (n, L)
        self.model.setup_kv_cache(n, L)  # a cache of its own: the batch's stays in self.caches
        logits = self.model(idx, input_pos=0, position_ids=positions, attention_mask=real if padded else None,
                            last_only=True)[:, -1]  # (n, V)
        fresh = [block.attn.cache for block in self.model.blocks]
        if self.size and self.pos >= self.context_length:
            self._compact()
        pos = max(self.pos if self.size else 0, L)
        self._reserve(self.size + n, pos + 1)
        rows = slice(self.size, self.size + n)
        for cache, new in zip(self.caches, fresh):
            cache.k[rows, :, :L] = new.k
            cache.v[rows, :, :L] = new.v
        self.mask[rows] = False
        self.mask[rows, :L] = real
        self.lengths[rows] = lengths
        self.size, self.pos = self.size + n, pos
        self._install()
        return logits

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (indices, in order); the others leave the batch at once."""
        if len(rows) == self.size:
            return
        if not rows:
            self.size = self.pos = 0
            return
        index = torch.tensor(rows, device=self.device)
        self._install()
        select_cache_rows(self.model, index, self.pos)
        self.mask[: len(rows)] = self.mask[index]
        self.lengths[: len(rows)] = self.lengths[index]
        self.size = len(rows)

    # ---- one step ------------------------------------------------------------------
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,); return the logits (B, V) of the next ones."""
        longest = int(self.lengths[: self.size].max())
        if self.pos >= self.slots:
            if self.slots < self.context_length:
                self._reserve(self.size, self.pos + 1)
            else:
                self._compact()
        elif self.pos - longest > max(longest, 32):
            self._compact()  # more than half of the visible slots are masked
        B, pos = self.size, self.pos
        self.mask[:B, pos] = True
        lengths = self.lengths[:B]
        contiguous = bool((lengths == pos).all())  # every row holds exactly slots [0, pos)
        self._install()
        logits = self.model(tokens.view(B, 1).to(self.device), input_pos=pos,
                            position_ids=None if contiguous else lengths.view(B, 1),
                            attention_mask=None if contiguous else self.mask[:B, : pos + 1])[:, -1]
        self.lengths[:B] += 1
        self.pos += 1
        return logits

    # ---- storage -------------------------------------------------------------------
    def _install(self) -> None:
        for block, cache in zip(self.model.blocks, self.caches):
            block.attn.cache = cache

    def _reserve(self, rows: int, slots: int) -> None:
        """Grow the buffers (powers of two) to hold at least ``rows`` x ``slots``."""
        old_rows, old_slots = self.mask.shape
        if rows <= old_rows and slots <= old_slots:
            return
        new_rows = max(old_rows, min(self.max_rows, _power_of_two(rows)))
        new_slots = max(old_slots, min(self.context_length, _power_of_two(slots)))
        cfg = self.model.config
        caches = []
        for old in self.caches or [None] * cfg.n_layers:
            cache = KVCache(new_rows, new_slots, cfg.n_heads, cfg.head_dim, device=self.device, dtype=self.dtype)
            if old is not None:
                cache.k[:old_rows, :, :old_slots] = old.k
                cache.v[:old_rows, :, :old_slots] = old.v
            caches.append(cache)
        self.caches = caches
        mask = torch.zeros(new_rows, new_slots, dtype=torch.bool, device=self.device)
        mask[:old_rows, :old_slots] = self.mask
        lengths = torch.zeros(new_rows, dtype=torch.long, device=self.device)
        lengths[:old_rows] = self.lengths
        self.mask, self.lengths = mask, lengths

    def _compact(self) -> None:
        """Gather every row's slots to the front, in their order; ``pos`` becomes the longest row."""
        B, pos = self.size, self.pos
        longest = int(self.lengths[:B].max())
        # a stable sort puts each row's real slots first, in their order
        order = torch.sort((~self.mask[:B, :pos]).to(torch.uint8), dim=1, stable=True).indices[:, :longest]
        cfg = self.model.config
        index = order[:, None, :, None].expand(B, cfg.n_heads, longest, cfg.head_dim)  # (B, H, longest, D)
        for cache in self.caches:
            for buf in (cache.k, cache.v):
                buf[:B, :, :longest] = buf[:B, :, :pos].gather(2, index)
        self.mask[:B] = False
        self.mask[:B, :longest] = torch.arange(longest, device=self.device) < self.lengths[:B, None]
        self.pos = longest


def _power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()
