"""A synthetic step-batch DataModule for module-level tests (no tokenizer, no files)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset


class _Steps(IterableDataset):
    def __init__(self, n_steps: int, accum: list[int], micro: int, seq: int, vocab: int, seed: int):
        self.n_steps, self.accum, self.micro, self.seq = n_steps, accum, micro, seq
        self.vocab, self.seed = vocab, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        assert info is None
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        g = torch.Generator().manual_seed(self.seed + 1000 * rank)
        for step in range(self.n_steps):
            a = self.accum[min(step, len(self.accum) - 1)]
            # a learnable pattern: token t+1 = (token t + 1) mod vocab
            start = torch.randint(0, self.vocab, (a, self.micro, 1), generator=g)
            seq = (start + torch.arange(self.seq + 1)) % self.vocab
            yield {"kind": "lm", "input_ids": seq[..., :-1], "labels": seq[..., 1:],
                   "index": torch.arange(a * self.micro).view(a, self.micro) + step * 1000}


class SyntheticSteps(L.LightningDataModule):
    def __init__(self, n_steps: int = 8, accum: list[int] | None = None, micro: int = 4,
                 seq: int = 16, vocab: int = 512, seed: int = 0):
        super().__init__()
        self.vocab_size = vocab
        self.tokenizer_spec = None
        self.args = (n_steps, accum or [1], micro, seq, vocab, seed)

    def train_dataloader(self):
        return DataLoader(_Steps(*self.args), batch_size=None)

    def val_dataloader(self):
        g = torch.Generator().manual_seed(99)
        start = torch.randint(0, self.args[4], (8, 1), generator=g)
        seq = (start + torch.arange(self.args[3] + 1)) % self.args[4]
        batches = [{"input_ids": seq[i : i + 4, :-1], "labels": seq[i : i + 4, 1:]}
                   for i in (0, 4)]
        return DataLoader(batches, batch_size=None)
