"""The replay buffer of :class:`~hjbcourse.QLearning`: transitions (x, a, r, x') stored on one device."""
from __future__ import annotations

import torch

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """A circular buffer of transitions (x, a, r, x'), stored on one device; ``sample`` draws uniformly."""

    FIELDS = ("x", "a", "r", "x2")

    def __init__(self, capacity: int, state_dim: int, action_dim: int, dtype=torch.float32, device="cpu"):
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        kw = dict(dtype=dtype, device=device)
        self.x = torch.empty(capacity, state_dim, **kw)
        self.a = torch.empty(capacity, action_dim, **kw)
        self.r = torch.empty(capacity, 1, **kw)
        self.x2 = torch.empty(capacity, state_dim, **kw)
        self.size = 0
        self._next = 0

    def add(self, x, a, r, x2) -> None:
        n = x.shape[0]
        idx = (torch.arange(n, device=self.x.device) + self._next) % self.capacity
        for buf, v in ((self.x, x), (self.a, a), (self.r, r), (self.x2, x2)):
            buf[idx] = v.to(buf)
        self._next = (self._next + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator):
        idx = torch.randint(0, self.size, (n,), generator=generator, device=generator.device).to(self.x.device)
        return self.x[idx], self.a[idx], self.r[idx], self.x2[idx]

    def __len__(self) -> int:
        return self.size

    def state_dict(self) -> dict:
        """The filled part of the buffer and its write position (for checkpoints)."""
        return {"size": self.size, "next": self._next,
                **{name: getattr(self, name)[:self.size].detach().cpu() for name in self.FIELDS}}

    def load_state_dict(self, state: dict) -> None:
        """Refill from :meth:`state_dict` (a smaller capacity keeps the first ``capacity`` transitions)."""
        n = min(int(state["size"]), self.capacity)
        for name in self.FIELDS:
            buf = getattr(self, name)
            buf[:n] = state[name][:n].to(buf)
        self.size = n
        self._next = int(state["next"]) % self.capacity if n == int(state["size"]) else n % self.capacity
