"""Run by tests/server/test_client_dist.py in a separate environment that has only the installed
rig client distribution (and its declared dependencies): plan, upload, follow the update, a
refused request. Prints one JSON object. Python 3.9-compatible, no pandas.

Usage: python client_dist_roundtrip.py TARGET TOKEN SUBJECT TRIALS.json
"""

import json
import sys

import google.protobuf
import grpc

import twin_client
from twin_client.client import TwinClient, error_reason, field_violations, operation_metadata, operation_result, operation_state_name
from twin_proto import pb


def main(target, token, subject, trials_path):
    side = {0: pb.common_pb2.SIDE_LEFT, 1: pb.common_pb2.SIDE_RIGHT}
    feedback = {1: pb.common_pb2.FEEDBACK_REWARDED, -1: pb.common_pb2.FEEDBACK_ERROR}
    rows = json.loads(open(trials_path).read())
    trials = [
        pb.common_pb2.Trial(
            contrast_left=r["contrast_left"], contrast_right=r["contrast_right"], choice=side[r["choice"]],
            feedback=feedback[r["feedback"]], correct_side=side[r["correct_side"]], prob_left=r["prob_left"],
        )
        for r in rows
    ]
    out = {"client_file": twin_client.__file__, "protobuf": google.protobuf.__version__, "grpcio": grpc.__version__}
    with TwinClient(target, token, timeout_s=120) as c:
        plan = c.next_session(subject, n_rollouts=20)
        out["plan"] = {"subject": plan.subject, "n_trials": plan.n_trials, "twin": plan.twin.name, "fallback_reason": pb.curriculum_service_pb2.FallbackReason.Name(plan.fallback_reason)}
        up = c.upload_session(subject, trials, label="dist")
        op = c.wait_operation(up.twin_update.name, timeout_s=120)
        result = operation_result(op)
        out["upload"] = {"session": up.session, "operation": op.name, "done": op.done, "state": operation_state_name(op), "kind": operation_metadata(op).kind, "version": result.twin.version}
        bad = list(trials)
        bad[2] = pb.common_pb2.Trial(contrast_left=1.0, choice=pb.common_pb2.SIDE_LEFT, correct_side=pb.common_pb2.SIDE_LEFT)  # no feedback
        try:
            c.upload_session(subject, bad)
            out["refused"] = None
        except grpc.RpcError as exc:
            out["refused"] = {"code": exc.code().name, "reason": error_reason(exc), "fields": [f for f, _ in field_violations(exc)]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
