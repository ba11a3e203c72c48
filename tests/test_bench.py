"""The benchmark's CPU accounting: which processes belong to a design, and what they used."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.__main__ import cpu_seconds, process_roles

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads Linux /proc")


def test_a_design_is_its_process_tree_named_by_role():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "service.worker"])
    try:
        roles = process_roles(os.getpid())
        assert roles[os.getpid()] == "other"
        assert roles[child.pid] == "worker"  # named by its command line
        assert process_roles(child.pid) == {child.pid: "worker"}  # the parent is not part of the child's tree
    finally:
        child.kill()
        child.wait()


def test_cpu_seconds_grow_with_work_done():
    roles = {os.getpid(): "api"}
    before = cpu_seconds(roles)["api"]
    give_up_at = time.monotonic() + 5
    while cpu_seconds(roles)["api"] - before < 0.2 and time.monotonic() < give_up_at:
        sum(i * i for i in range(100_000))
    assert cpu_seconds(roles)["api"] - before >= 0.2
    assert cpu_seconds({2**22 + 12345: "api"}) == {}  # a process that is gone counts for nothing
