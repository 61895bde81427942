"""What the benchmarks record about the machine they ran on."""

from pathlib import Path


def cpu_times():
    """(steal, total) jiffies of this machine (Linux): time a hypervisor gave to other guests."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return fields[7], sum(fields)


def steal_since(before):
    """Share of CPU time stolen by the hypervisor since ``before``: timings taken under steal are slower."""
    after = cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)
