"""Straightforward float64 references written from ../shared/docs/multilevelot.md.

One sample and one token at a time, deliberately naive (plain loops, the spec's own Sinkhorn iteration in
the standard domain), so that it shares no code or trick with the vectorised implementation it checks.
"""

from __future__ import annotations

import torch
from torch import Tensor


def multilevel_ot(
    s: Tensor,
    t: Tensor,
    sm: Tensor,
    tm: Tensor,
    k: int = 50,
    tau: float = 1.0,
    tau_sd: float = 2.0,
    eps: float = 0.1,
    iters: int = 20,
    alpha: float = 0.15,
    beta: float = 0.1,
    gamma: float = 0.1,
) -> dict[str, float]:
    s, t = s.double(), t.double()
    k = min(k, s.shape[-1], t.shape[-1])
    had_sum = sl_sum = 0.0
    m_total = 0
    sds: list[float] = []
    for b in range(s.shape[0]):
        ns, nt = int(sm[b].sum()), int(tm[b].sum())
        if ns == 0 or nt == 0:
            continue
        pt = torch.softmax(t[b, :nt] / tau, dim=-1)
        ps = torch.softmax(s[b, :ns] / tau, dim=-1)
        rt = torch.argsort(pt.sum(0), descending=True)[:k]
        rs = torch.argsort(ps.sum(0), descending=True)[:k]
        log_ps = torch.log_softmax(s[b, :ns] / tau, dim=-1)
        m = min(ns, nt)
        for i in range(m):
            for j in range(k):
                had_sum += abs(float(pt[i, rt[j]] - ps[i, rs[j]]))
                sl_sum += -float(pt[i, rt[j]] * log_ps[i, rs[j]])
        m_total += m
        t2 = torch.softmax(t[b, :nt] / tau_sd, dim=-1)[:, rt]
        s2 = torch.softmax(s[b, :ns] / tau_sd, dim=-1)[:, rs]
        cost = torch.zeros(nt, ns, dtype=torch.float64)
        for i in range(nt):
            for j in range(ns):
                cost[i, j] = (t2[i] - s2[j]).abs().sum()
        kernel = torch.exp(-cost / eps)
        a = torch.full((nt,), 1.0 / nt, dtype=torch.float64)
        c = torch.full((ns,), 1.0 / ns, dtype=torch.float64)
        v = torch.ones(ns, dtype=torch.float64)
        for _ in range(iters):
            u = a / (kernel @ v)
            v = c / (kernel.T @ u)
        plan = torch.diag(u) @ kernel @ torch.diag(v)
        sds.append(float((plan * cost).sum()))
    had = had_sum / m_total if m_total else 0.0
    sl = sl_sum / m_total if m_total else 0.0
    sd = sum(sds) / len(sds) if sds else 0.0
    return {"had": had, "sl": sl, "sd": sd, "loss": alpha * (had + beta * sl + gamma * sd)}


def uld(s: Tensor, t: Tensor, sm: Tensor, tm: Tensor, weight: float = 0.15) -> dict[str, float]:
    s, t = s.double(), t.double()
    width = max(s.shape[-1], t.shape[-1])
    total = 0.0
    m_total = 0
    for b in range(s.shape[0]):
        m = min(int(sm[b].sum()), int(tm[b].sum()))
        for i in range(m):
            ps = torch.zeros(width, dtype=torch.float64)
            pt = torch.zeros(width, dtype=torch.float64)
            ps[: s.shape[-1]] = torch.sort(torch.softmax(s[b, i], -1), descending=True).values
            pt[: t.shape[-1]] = torch.sort(torch.softmax(t[b, i], -1), descending=True).values
            total += float((ps - pt).abs().sum())
        m_total += m
    value = total / m_total if m_total else 0.0
    return {"uld": value, "loss": weight * value}


def forward_kl(s: Tensor, t: Tensor, sm: Tensor, tm: Tensor, tau: float = 1.0) -> float:
    s, t = s.double(), t.double()
    total = 0.0
    m_total = 0
    for b in range(s.shape[0]):
        m = min(int(sm[b].sum()), int(tm[b].sum()))
        for i in range(m):
            pt = torch.softmax(t[b, i] / tau, -1)
            total += float((pt * (pt.log() - torch.log_softmax(s[b, i] / tau, -1))).sum())
        m_total += m
    return total / m_total if m_total else 0.0
