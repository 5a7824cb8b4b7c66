#!/usr/bin/env python
"""Example rig client: ask for the next session's plan before a session, upload its trials
after it.

Before a session (writes the plan as JSON for the rig software, e.g. to fill iblrig's task
parameters)::

    python examples/rig_client.py plan --subject mouse-7 --out plan.json

After it (a canonical trials table of that one session: contrast_left, contrast_right, choice
(1 = right), feedback (+1/-1), correct_side, prob_left; CSV or parquet)::

    python examples/rig_client.py upload --subject mouse-7 --trials session.csv --label 2024-05-03 --wait

The server address comes from ``--target`` (default ``$TWIN_SERVER`` or 127.0.0.1:50051), the
rig's bearer token from ``$TWIN_TOKEN``; ``--tls`` (with ``--ca`` for a private CA) for TLS.
Exit status: 0 on success, 1 when the server refused the request (the message names the bad
fields), 2 on usage errors.

It needs the rig client distribution only (``learning-twins-client``: :mod:`twin_client` and the
stubs of :mod:`twin_proto`, on Python >= 3.9 with grpcio, protobuf and googleapis-common-protos;
``make client-dist`` builds its wheel, ``pip install learning_twins_client-*.whl`` installs it on
the rig). CSV trials are read with the standard library; parquet needs pandas (the
distribution's ``tables`` extra).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import grpc

from twin_client.client import (
    TwinClient,
    error_reason,
    field_violations,
    message_dict,
    operation_metadata,
    operation_result,
    operation_state_name,
    trial_pb,
    trials_to_pb,
)
from twin_proto.pb import common_pb2, curriculum_service_pb2, operation_pb2


def _plan_summary(plan: curriculum_service_pb2.SessionPlan) -> str:
    contrasts = ", ".join(f"{c.contrast:g} ({c.proportion:.0%})" for c in plan.contrasts)
    lines = [
        f"subject {plan.subject}: {plan.n_trials} trials, phase {plan.start_phase}, contrasts {contrasts}",
        f"reward {plan.rig.reward_volume_ul:g} uL, error timeout {plan.rig.error_timeout.ToTimedelta().total_seconds():g} s, "
        f"debias {'on' if plan.protocol.debias.enabled else 'off'}, biased blocks {'on' if plan.protocol.blocks.enabled else 'off'}",
        f"source: {curriculum_service_pb2.PlanSource.Name(plan.source)}" + (f" (FALLBACK: {curriculum_service_pb2.FallbackReason.Name(plan.fallback_reason)})" if plan.fallback else ""),
        f"why: {plan.explanation}",
    ]
    if plan.stage:
        stage = curriculum_service_pb2.TrainingStage.Name(plan.stage)[len("TRAINING_STAGE_"):].lower()
        lines.append(f"stage: {stage} ({plan.stage_summary})" if plan.stage_summary else f"stage: {stage}")
    else:
        lines.append("stage: not reported (an older server)")
    if plan.target_criterion:
        lines.append(f"target criterion: {plan.target_criterion_description or plan.target_criterion}")
    elif plan.stage:
        lines.append("target criterion: none (ready for recording)")
    if plan.HasField("expected_trials_to_target"):
        e = plan.expected_trials_to_target
        lines.append(f"expected trials to {plan.target_criterion}: {e.mean:.0f} [{e.lo:.0f}, {e.hi:.0f}], capped at {plan.max_sessions} sessions")
    else:
        lines.append("no trials-to-criterion forecast")
    if plan.HasField("forecast"):
        a = plan.forecast.accuracy
        lines.append(f"predicted accuracy {a.mean:.2f} [{a.lo:.2f}, {a.hi:.2f}] (twin v{plan.twin.version})")
    if plan.max_sessions:
        lines.append(f"the optimizer simulated at most {plan.max_sessions} sessions ahead")
    for c in plan.changes:
        d, a1 = c.drop_one, c.add_one
        lines.append(
            f"{'change' if c.kept else 'left out'}: {c.description}: contribution {d.mean:+.1%} [{d.lo:+.1%}, {d.hi:+.1%}], alone {a1.mean:+.1%} [{a1.lo:+.1%}, {a1.hi:+.1%}]"
        )
    for f in plan.family_speedups:
        s = f.speedup
        lines.append(f"{f.family} twins predict {s.mean:+.1%} [{s.lo:+.1%}, {s.hi:+.1%}] ({f.interval_level:.0%} interval, {f.n_units} runs)")
    return "\n".join(lines)


def cmd_plan(client: TwinClient, args: argparse.Namespace) -> int:
    plan = client.next_session(args.subject, max_trials=args.max_trials, max_reward_volume_ul=args.max_reward_ul)
    print(_plan_summary(plan))
    if args.out:
        args.out.write_text(json.dumps(message_dict(plan), indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def _read(path: Path) -> list[common_pb2.Trial]:
    """The session's trials as messages: CSV through the standard library, parquet through pandas."""
    if path.suffix in (".parquet", ".pqt"):
        import pandas as pd  # only parquet needs it

        return trials_to_pb(pd.read_parquet(path), with_session=False)
    with path.open(newline="") as f:
        return [trial_pb(row, with_session=False) for row in csv.DictReader(f)]


def cmd_upload(client: TwinClient, args: argparse.Namespace) -> int:
    trials = _read(args.trials)
    resp = client.upload_session(args.subject, trials, label=args.label or "")
    print(f"stored {resp.subject} session {resp.session} ({resp.n_trials} trials)")
    if not resp.HasField("twin_update"):
        print(f"no twin update: {resp.update_skipped_reason}")
        return 0
    op = resp.twin_update
    print(f"twin update started: {op.name}")
    if args.wait:
        for update in client.watch_operation(op.name, timeout_s=args.wait_timeout):
            op = update
            meta = operation_metadata(op)
            print(f"  {operation_state_name(op)} {meta.progress:.0%} {meta.message}")
            if op.done:
                break
        result = operation_result(op)
        if isinstance(result, operation_pb2.TwinUpdateResult):
            print(f"twin v{result.twin.version} now serves {resp.subject}")
        elif op.done:
            print(f"twin update {operation_state_name(op)}: {op.error.message}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default=os.environ.get("TWIN_SERVER", "127.0.0.1:50051"), help="server host:port")
    p.add_argument("--tls", action="store_true", help="connect over TLS")
    p.add_argument("--ca", type=Path, default=None, help="PEM CA bundle to trust (private CA)")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline of each call, seconds")
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("plan", help="before a session: the next session's plan")
    pl.add_argument("--subject", required=True)
    pl.add_argument("--max-trials", type=int, default=0, help="cap on the session's trials (0: none)")
    pl.add_argument("--max-reward-ul", type=float, default=0.0, help="cap on the reward volume (0: none)")
    pl.add_argument("--out", type=Path, default=None, help="write the plan as JSON here")
    up = sub.add_parser("upload", help="after a session: upload its trials")
    up.add_argument("--subject", required=True)
    up.add_argument("--trials", type=Path, required=True, help="the session's trials (CSV or parquet)")
    up.add_argument("--label", default=None, help="session key or date")
    up.add_argument("--wait", action="store_true", help="follow the twin update until it finishes")
    up.add_argument("--wait-timeout", type=float, default=900.0)
    args = p.parse_args(argv)
    token = os.environ.get("TWIN_TOKEN")
    with TwinClient(args.target, token, tls=args.tls, root_certificates=args.ca.read_bytes() if args.ca else None, timeout_s=args.timeout) as client:
        try:
            return cmd_plan(client, args) if args.command == "plan" else cmd_upload(client, args)
        except grpc.RpcError as exc:
            print(f"server refused: {exc.code().name}: {exc.details()} [{error_reason(exc)}]", file=sys.stderr)
            for field, why in field_violations(exc):
                print(f"  {field}: {why}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
