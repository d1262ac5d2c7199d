#!/bin/bash
# Issue 17's calibration and validation runs again, the ranks of each
# group without --link now summing their allreduces through shared memory
# (tandem built at 2026-12-06 23:01 UTC, main after the shared-memory
# commits, in /tmp/plan-bin-shm/tandem), into /tmp/planshm. The --link
# eth-25g runs (ranks in separate network namespaces, on TCP) were run
# again after the others, so that every run of the pair comes from the
# same hour: NO_LINK=1 for the first half, then LINK_ONLY=1.
T=/tmp/plan-bin-shm/tandem OUT=/tmp/planshm exec bash "$(dirname "$0")/../run.sh"
