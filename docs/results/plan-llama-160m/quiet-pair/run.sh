#!/bin/bash
# The quiet pair of issue 17 (docs/planning.md): the same runs as ../run.sh,
# into /tmp/planq, with a tandem binary built at commit ddfc0fe in
# /tmp/plan-bin/tandem.
OUT=/tmp/planq exec bash "$(dirname "$0")/../run.sh"
