"""flashocc.cpu_memory: glibc keeps freed memory for reuse, in this process and in the ones it starts."""
import platform
import subprocess
import sys

import pytest

from flashocc import cli

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# In a child process: mallopt is process-wide and cannot be undone, so the test process is left as it is.
PROBE = """
import os, subprocess, sys
import torch
from flashocc.cpu_memory import reuse_freed_memory
applied = reuse_freed_memory()
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('MALLOC_MMAP_MAX_'))"],
                       capture_output=True, text=True, check=True).stdout.strip()
x = torch.randn(6, 64, 64, 176)
w = torch.randn(256, 64, 1, 1)
ref = torch.nn.functional.conv2d(x, w)
same = all(torch.equal(torch.nn.functional.conv2d(x, w), ref) for _ in range(3))
print(applied, os.environ.get("MALLOC_MMAP_MAX_"), os.environ.get("MALLOC_TRIM_THRESHOLD_"), child, same)
"""


@pytest.mark.skipif(not GLIBC, reason="reuse_freed_memory tunes glibc's malloc; this C library is not glibc")
def test_applies_on_glibc_and_reaches_child_processes():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "0", str(2**31 - 1), "0", "True"]


def test_reports_false_elsewhere(monkeypatch):
    from flashocc import cpu_memory

    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("", ""))
    assert cpu_memory.reuse_freed_memory() is False


@pytest.mark.parametrize("command", ["eval", "predict", "bench"])
def test_cli_flag_calls_it_and_says_when_it_cannot(command, monkeypatch, capsys):
    from flashocc import cpu_memory

    calls = []
    monkeypatch.setattr(cpu_memory, "reuse_freed_memory", lambda: calls.append(1) or False)
    args = cli.build_parser().parse_args(
        {"eval": ["eval", "flashocc-tiny", "--checkpoint", "c.pt", "--data", "d", "--reuse-memory"],
         "predict": ["predict", "flashocc-tiny", "--checkpoint", "c.pt", "--data", "d", "--out", "o",
                     "--reuse-memory"],
         "bench": ["bench", "flashocc-tiny", "--reuse-memory"]}[command])
    assert args.reuse_memory
    cli._reuse_memory(args)
    assert calls == [1] and "--reuse-memory needs glibc" in capsys.readouterr().err
    args.reuse_memory = False
    cli._reuse_memory(args)
    assert calls == [1]


def test_bench_reports_no_cpu_peak_while_freed_memory_is_kept(monkeypatch):
    import torch

    from flashocc.deploy.timing import PeakMemory

    monkeypatch.delenv("MALLOC_MMAP_MAX_", raising=False)
    with PeakMemory(torch.device("cpu")) as mem:
        torch.ones(1 << 20).sum()
    assert mem.peak_mib is not None
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    with PeakMemory(torch.device("cpu")) as mem:
        torch.ones(1 << 20).sum()
    assert mem.peak_mib is None
