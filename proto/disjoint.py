"""Disjoint sets (union-find) over the integers 0..n-1, with path halving: the cabling check of the config
loader (proto.configtopo), the transit rule (proto.transit) and the topology page's components
(controller.topoview) share it. A union keeps the smaller root, so a set's root is its smallest member."""

from __future__ import annotations

__all__ = ["DisjointSets"]


class DisjointSets:
    __slots__ = ("parent",)

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        """The root (smallest member) of x's set."""
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        """Join the sets of a and b; False when they were one already."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if ra < rb:
            self.parent[rb] = ra
        else:
            self.parent[ra] = rb
        return True
