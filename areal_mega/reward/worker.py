"""One reward worker process: `python -m areal_mega.reward.worker FD PROGRESS_FD MEMORY_MB CHECKER`.

The pool (`pool.py`) starts this module as a fresh interpreter with one end
of a socket pair inherited as file descriptor FD, rather than through
`multiprocessing`: a spawned or forkserver child re-imports the caller's
`__main__`, which breaks plain scripts without a `__main__` guard, `python -c`
and notebooks. This process imports only the checker.

Loop: receive a chunk `(seq, mode, tasks)`, tasks `[(kind, a, b)]` (kind
"response": `a` is a whole model response, "answer": `a` is an answer string),
and send back one message for the whole chunk: `[(builtin, math_verify)]` in
task order, each a bool, or None when that checker is not enabled. Before each
check the worker writes `progress.PROGRESS` = (seq, position in the chunk, monotonic
start time in s) into the shared page at PROGRESS_FD (position = len(tasks)
once the chunk is done), with no system call: the parent reads it to time each
check and, when it kills a hung worker, to know which check hung (the others of
the chunk are re-run elsewhere). One message per chunk instead of one per check
cut a worker's CPU per answer by ~40% on the reward benchmark. The address-space limit is set before
anything heavy is imported, so a runaway check dies with MemoryError or is
killed; the parent enforces the time limit.
"""
from __future__ import annotations

import sys
import time

from areal_mega.reward.progress import PROGRESS


# One response per kind of answer (number, fraction, expression, interval, relation, set, matrix, equation,
# complex, units, percent), committed in each extraction style; generic, not from any benchmark.
_WARM_UP = (
    ("so the answer is $\\boxed{\\frac{x}{2} + 1}$", "0.5x + 1"),
    ("The final answer is $\\dfrac{3}{4}$. I hope it is correct.", "0.75"),
    ("**Final Answer:** $(-\\infty, 1) \\cup (2, 3]$", "x < 1 \\text{ or } 2 < x \\le 3"),
    ("the answer is $x \\ge 2$", "[2, \\infty)"),
    ("\\boxed{\\{3, 1, 2\\}}", "1, 2, 3"),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}"),
    ("\\boxed{y = 2x + 3}", "y=2x+3"),
    ("\\boxed{2+3i}", "2-3i"),
    ("\\boxed{3\\sqrt{13}}", "\\sqrt{117}"),
    ("\\boxed{12{,}345 \\text{ cm}^2}", "12345"),
    ("\\boxed{50\\%}", "0.5"),
    ("\\boxed{x^2 - 1}", "(x-1)(x+1)"),
)


def _limit_memory(memory_limit_mb: int) -> None:
    if memory_limit_mb > 0:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def serve(fd: int, progress_fd: int, memory_limit_mb: int, checker: str) -> None:
    """Answer checks on the connection at `fd` until it closes: each message is a chunk of tasks,
    answered by one message when the chunk is done; progress goes to the page at `progress_fd`."""
    import mmap
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    progress = mmap.mmap(progress_fd, PROGRESS.size)
    _limit_memory(memory_limit_mb)
    from areal_mega.reward import equal
    from areal_mega.reward.equal import equal_unguarded
    from areal_mega.reward.extract import answer_part, extract_answer

    mv_equal = None
    if checker in ("math_verify", "both"):
        from areal_mega.reward.mathverify import math_verify_equal as mv_equal

    def check(kind: str, a: str | None, b: str, mode: str) -> tuple[bool | None, bool | None]:
        ours = mv = None
        if checker in ("builtin", "both"):
            try:
                ours = bool(equal_unguarded(extract_answer(a, mode) if kind == "response" else a, b))
            except (MemoryError, RecursionError, ValueError, TypeError, ArithmeticError, AttributeError):
                ours = False
        if mv_equal is not None:  # the same think policy for math-verify: only the part after </think> counts
            part = answer_part(a) if kind == "response" and isinstance(a, str) else a
            mv = mv_equal(part, b, is_response=kind == "response")
        return ours, mv

    # sympy imports parts of itself (tensor, combinatorics: ~0.1 s) on the first sum it builds, and each
    # kind of answer runs code paths (regexes, sympy's sets and evalf) for the first time; pay that here,
    # before the pool counts the worker as up, rather than inside the first reward checks
    for response, gold in _WARM_UP:
        check("response", response, gold, "reward")
    equal.clear_caches()  # the pass over real checks starts with empty memos
    conn.send("ready")
    while True:
        try:
            seq, mode, tasks = conn.recv()
        except (EOFError, OSError):
            return
        out = []
        for pos, (kind, a, b) in enumerate(tasks):
            PROGRESS.pack_into(progress, 0, seq, pos, time.monotonic())
            out.append(check(kind, a, b, mode))
        PROGRESS.pack_into(progress, 0, seq, len(tasks), time.monotonic())
        conn.send(out)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
