"""The timing harness: contenders' training steps side by side in one process, interleaved in rounds.

A *contender* is a name and a factory; the factory builds its networks, optimizer and data and returns ``step()``, a
closure doing one full training step (forward, loss, backward, optimizer step). :func:`run_benchmark`

1. builds every contender, warms each up, then runs ``rounds`` rounds; in round ``r`` each contender runs ``k`` steps
   timed together with ``time.perf_counter`` (after ``torch.cuda.synchronize`` on a GPU), in an order rotated by
   ``r`` so no contender always runs right after the same other one;
2. measures peak memory, one contender at a time (:func:`measure_memory`), after the timing so that one-time costs
   (lazy imports, BLAS buffers) are already paid by the harness process;
3. reports the median ms/step over the rounds, the spread (25th-75th percentile), and the ratio of medians to the
   raw-PyTorch contender named as its baseline.

Peak memory, what it measures:

* CPU: each contender runs in a child ``fork()``-ed from the harness (so the imports are shared and not counted). The
  child resets its peak-RSS counter (``/proc/self/clear_refs``), builds the contender and runs warm-up + ``k`` steps;
  the number is ``VmHWM`` (peak resident set) minus the resident set before building, in MiB: the networks, the
  optimizer state (Adam: two buffers per parameter), the peak of activations, gradients and optimizer temporaries,
  and the allocator's and Python's overhead. Before measuring, the child returns the free heap pages it inherited
  (``malloc_trim(0)``) and fixes glibc's mmap threshold at 128 KiB, so every page it uses is counted (else the
  parent's freed memory, already resident, would hide tensors), and runs one tiny training step first (a forked
  child restarts torch's autograd thread, about 19 MiB, on its first backward). An empty contender measures 0.0 MiB
  and a ``Linear(4, 4)`` + Adam one 0.0 MiB. It is an OS-level number, good to a few MiB.
* CUDA: in the harness process, one contender at a time: ``torch.cuda.max_memory_allocated()`` after building it and
  running warm-up + ``k`` steps, minus ``memory_allocated()`` before building it: tensor bytes only (no allocator
  cache, no CUDA context).
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

StepFn = Callable[[], Any]


@dataclass
class Contender:
    """One way to do the same training step.

    Parameters
    ----------
    name : str
        The row label.
    factory : callable
        ``factory() -> step``; builds everything (same seed for every contender, so the same initial weights).
    baseline : str, optional
        The name of the raw-PyTorch contender this one is compared with (same estimator); ``None`` for none.
    group : str
        A label for the library (``torch``, ``pyro``, ``pixyz``, ``pyro_dgm``), used in the README only.
    """

    name: str
    factory: Callable[[], StepFn]
    baseline: str | None = None
    group: str = ""


@dataclass
class Result:
    name: str
    baseline: str | None
    group: str = ""
    ms: list[float] = field(default_factory=list)  # ms/step of each round
    mem_mib: float | None = None
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.ms) if self.ms else float("nan")

    @property
    def spread(self) -> tuple[float, float]:
        if len(self.ms) < 2:
            return (self.median, self.median)
        q = statistics.quantiles(self.ms, n=4, method="inclusive")
        return (q[0], q[2])


def paired_ratio(res: Result, base: Result | None) -> tuple[float, float, float] | None:
    """The median and 25–75 % range of ``res``'s per-round time over ``base``'s in the same round.

    Contenders of one round run back to back, so a slow phase of a shared machine (another job, a frequency change)
    hits both times of a pair; taking the ratio within each round, before the median, cancels it.
    """
    if base is None or not base.ms or not res.ms:
        return None
    ratios = [a / b for a, b in zip(res.ms, base.ms)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q = statistics.quantiles(ratios, n=4, method="inclusive")
    return statistics.median(ratios), q[0], q[2]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")
    return text if len(text) < 160 else text[:157] + "..."


# ---------------------------------------------------------------------------------------------------------- memory
def _read_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _prime_child() -> None:
    """One tiny training step: a forked child restarts torch's autograd worker thread (its stack and malloc arena,
    about 19 MiB) on its first backward; pay that before measuring, as the harness process already has."""
    lin = torch.nn.Linear(4, 4)
    opt = torch.optim.Adam(lin.parameters())
    for _ in range(2):
        opt.zero_grad()
        lin(torch.ones(2, 4)).sum().backward()
        opt.step()
    del lin, opt
    gc.collect()


def _cpu_peak_in_child(factory: Callable[[], StepFn], steps: int) -> dict[str, Any]:
    """Fork; in the child reset the peak RSS, build, run ``steps`` steps, and send back the peak growth in MiB."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            gc.collect()
            try:
                libc = ctypes.CDLL("libc.so.6")
                libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, so big tensors get fresh pages
                libc.malloc_trim(0)  # drop the free heap pages inherited from the parent: reusing them now counts
            except (OSError, AttributeError):
                pass
            _prime_child()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            base = _read_status_kib("VmRSS")
            step = factory()
            for _ in range(steps):
                step()
            peak = _read_status_kib("VmHWM")
            msg = {"mib": (peak - base) / 1024}
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            msg = {"error": _short(e)}
        os.write(w, json.dumps(msg).encode())
        os.close(w)
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks).decode() or "{}") or {"error": "child died"}
    except json.JSONDecodeError:
        return {"error": "child sent garbage"}


def _cuda_peak(factory: Callable[[], StepFn], steps: int, device: torch.device) -> dict[str, Any]:
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    try:
        step = factory()
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
        out: dict[str, Any] = {"mib": (torch.cuda.max_memory_allocated(device) - base) / 2**20}
    except BaseException as e:  # noqa: BLE001
        out = {"error": _short(e)}
    step = None  # noqa: F841 - free the contender before the next one
    gc.collect()
    return out


def measure_memory(contenders: Sequence[Contender], device: torch.device, steps: int) -> dict[str, dict[str, Any]]:
    """Peak memory of each contender, measured alone (see the module docstring for what the number means)."""
    out = {}
    for c in contenders:
        if device.type == "cuda":
            out[c.name] = _cuda_peak(c.factory, steps, device)
        elif sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK):
            out[c.name] = _cpu_peak_in_child(c.factory, steps)
        else:
            out[c.name] = {"error": "no /proc/self/clear_refs: peak RSS not measurable here"}
    return out


# ---------------------------------------------------------------------------------------------------------- timing
def time_interleaved(contenders: Sequence[Contender], device: torch.device, rounds: int, steps_per_round: int,
                     warmup: int, log: Callable[[str], None] = lambda s: None) -> dict[str, Result]:
    """Build all contenders, warm them up, then time ``rounds`` interleaved rounds of ``steps_per_round`` steps."""
    results = {c.name: Result(c.name, c.baseline, c.group) for c in contenders}
    steps: dict[str, StepFn] = {}
    for c in contenders:
        try:
            steps[c.name] = c.factory()
        except BaseException as e:  # noqa: BLE001 - a contender that cannot be built is reported, not fatal
            results[c.name].error = f"build failed: {_short(e)}"
            log(f"  {c.name}: build failed\n{traceback.format_exc()}")
    live = [c.name for c in contenders if c.name in steps]
    for name in list(live):
        try:
            for _ in range(warmup):
                steps[name]()
        except BaseException as e:  # noqa: BLE001
            results[name].error = f"step failed: {_short(e)}"
            log(f"  {name}: step failed\n{traceback.format_exc()}")
            live.remove(name)
    sync(device)
    for r in range(rounds):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for name in order:
            step = steps[name]
            try:
                sync(device)
                t0 = time.perf_counter()
                for _ in range(steps_per_round):
                    step()
                sync(device)
                t1 = time.perf_counter()
            except BaseException as e:  # noqa: BLE001
                results[name].error = f"step failed: {_short(e)}"
                live.remove(name)
                continue
            results[name].ms.append((t1 - t0) * 1e3 / steps_per_round)
    return results


def run_benchmark(contenders: Sequence[Contender], device: torch.device, rounds: int, steps_per_round: int,
                  warmup: int, memory: bool = True, log: Callable[[str], None] = lambda s: None,
                  cleanup: Callable[[], None] = lambda: None, memory_steps: int | None = None
                  ) -> dict[str, Result]:
    """Interleaved timing, then memory (one contender at a time); returns a :class:`Result` per contender.

    Timing goes first so that one-time costs (lazy imports, BLAS buffers, kernel caches) are paid in the harness
    process and not charged to whichever contender is measured first. ``cleanup()`` runs after the timing (drop global
    state the contenders left behind, such as Pyro's param store).
    """
    results = time_interleaved(contenders, device, rounds, steps_per_round, warmup, log)
    cleanup()
    gc.collect()
    n_mem = memory_steps if memory_steps is not None else warmup + steps_per_round
    mem = measure_memory(contenders, device, n_mem) if memory else {}
    cleanup()
    for name, m in mem.items():
        results[name].mem_mib = m.get("mib")
        if "error" in m and results[name].error is None and not results[name].ms:
            results[name].error = m["error"]
    return results


# ---------------------------------------------------------------------------------------------------------- output
def _fmt(x: float | None, nd: int = 2) -> str:
    if x is None or x != x:
        return "–"
    return f"{x:.{nd}f}"


def markdown_table(results: dict[str, Result], title_cols: Sequence[str] = (), title_vals: Sequence[str] = ()
                   ) -> str:
    """One row per contender: median ms/step, 25–75 % range, fastest round, its time over its raw-PyTorch baseline's
    (median and 25–75 % range of the per-round ratios, :func:`paired_ratio`), peak memory."""
    head = [*title_cols, "contender", "ms/step (median)", "25–75 %", "min", "× torch (25–75 %)", "peak mem (MiB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for res in results.values():
        if res.error and not res.ms:
            row = [*title_vals, res.name, "–", "–", "–", "–", _fmt(res.mem_mib, 1)]
            row[len(title_vals) + 2] = f"skipped: {res.error}"
            lines.append("| " + " | ".join(row) + " |")
            continue
        base = results.get(res.baseline) if res.baseline else None
        ratio = paired_ratio(res, base)
        lo, hi = res.spread
        ratio_text = ("1.00 (baseline)" if res.baseline == res.name else
                      f"{_fmt(ratio[0])} ({_fmt(ratio[1])}–{_fmt(ratio[2])})" if ratio else "–")
        row = [*title_vals, res.name, _fmt(res.median), f"{_fmt(lo)}–{_fmt(hi)}", _fmt(min(res.ms)), ratio_text,
               _fmt(res.mem_mib, 1)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def pivot_tables(per_config: dict[str, dict[str, Result]], config_header: str) -> tuple[str, str]:
    """Two compact tables, one row per contender and one column per configuration: "ms/step (× torch)" and MiB."""
    configs = list(per_config)
    names: list[str] = []
    for res in per_config.values():
        names += [n for n in res if n not in names]
    head = ["contender"] + [f"{config_header} {c}" for c in configs]
    sep = "|" + "|".join("---" for _ in head) + "|"
    t_lines = ["| " + " | ".join(head) + " |", sep]
    m_lines = ["| " + " | ".join(head) + " |", sep]
    for n in names:
        t_row, m_row = [n], [n]
        for c in configs:
            r = per_config[c].get(n)
            if r is None:
                t_row.append("–")
                m_row.append("–")
                continue
            if not r.ms:
                t_row.append("skipped" if r.error else "–")
            else:
                base = per_config[c].get(r.baseline) if r.baseline else None
                ratio = paired_ratio(r, base)
                t_row.append(f"{r.median:.1f} ({_fmt(ratio[0] if ratio else None)})")
            m_row.append(_fmt(r.mem_mib, 1))
        t_lines.append("| " + " | ".join(t_row) + " |")
        m_lines.append("| " + " | ".join(m_row) + " |")
    return "\n".join(t_lines), "\n".join(m_lines)
