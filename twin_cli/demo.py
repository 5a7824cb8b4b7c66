"""``twin demo`` as a library function: the main job on a small synthetic cohort, step by step.

:func:`run_demo` simulates a cohort of ground-truth learners, fits every rule and scores it on
held-out animals, forecasts later sessions, fits per-animal twins into a store, searches
curricula through them, proposes one animal's next session and runs the gRPC service round trip,
writing every result under :attr:`DemoConfig.out`. Each step is its own function.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from optimizer.objective import CurriculumScore
from optimizer.propose import ProposalConfig, propose_next_session
from optimizer.search import SearchConfig, SearchResult, local_search, search_store
from optimizer.space import CurriculumSpace
from twin.fit.heldout import forecast_table
from twin.data.batch import make_batch
from twin.data.readers import write_trials
from twin.fit.cohort import CohortFitConfig, CohortFitReport, fit_cohort
from twin.fit.recovery import RecoveryConfig, RecoveryResult, run_recovery
from twin.fit.train import FitConfig
from twin.models.learner import ModelSpec
from twin.persist.model_files import save_model
from twin.persist.sessions import SessionStore
from twin.persist.store import TwinStore
from twin.sim.agents import Family
from twin_cli.tables import format_table

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs.

    The default cohort is the ``reinforce`` family (REINFORCE with baselines), on which the
    ``reinforce`` rule recovers the true Δw map within the demo's time (r = 0.94 with these
    defaults); the flexible ``dnn`` rule needs far larger cohorts to recover a Δw map (README
    "Results"), and its figure says so when it fails (:func:`twin_cli.figures.recovery_verdict`).

    Attributes:
        out: output folder.
        family: ground-truth learners to simulate.
        animals: cohort size (a quarter held out).
        trials: trials per animal.
        epochs: maximum epochs per fit.
        seed: seeds every step.
        curricula: candidate curricula the search evaluates.
        progress: show progress bars.
    """

    out: Path = Path("runs/demo")
    family: Family = Family.REINFORCE
    animals: int = 16
    trials: int = 4000
    epochs: int = 30
    seed: int = 0
    curricula: int = 12
    progress: bool = True

    def recovery(self) -> RecoveryConfig:
        """The recovery run of step 1."""
        return RecoveryConfig(
            n_animals=self.animals,
            n_test=max(2, self.animals // 4),
            val_fraction=0.2,
            n_trials=self.trials,
            fit=FitConfig(epochs=self.epochs, patience=max(5, self.epochs // 4), seed=self.seed),
            seed=self.seed,
        )


def simulate_and_fit(config: DemoConfig, rec: RecoveryConfig, log: Log) -> RecoveryResult:
    """Step 1: simulate the cohort, fit every rule; write the trials and the model files."""
    log(f"[1/7] simulating {rec.n_animals} {config.family.value} learners x {rec.n_trials} trials, fitting {', '.join(rec.rules)}")
    res = run_recovery(config.family, rec, progress=config.progress)
    write_trials(res.simulation.trials, config.out / "trials.parquet")
    for rule, fr in res.fits.items():
        save_model(fr.model, config.out / "models" / f"{rule}.safetensors", {"family": config.family.value, "best_epoch": fr.best_epoch, "val_ll": fr.best_val_ll, "warnings": fr.warning_messages})
    return res


def held_out_summary(config: DemoConfig, res: RecoveryResult, log: Log) -> list[Path]:
    """Step 2: the held-out scores (``summary.csv``, ``summary.md``) and the recovery figures."""
    from twin_cli.figures import recovery_verdict, write_figures  # matplotlib only here

    log("[2/7] held-out animals:")
    table = res.table
    # ll_gain_ratio: zero at each held-out animal's own static fit (row static_own); the population
    # static rule's zero, more lenient, is ll_gain_ratio_pop_static
    log(format_table(table[["model", "test_ll_nats", "test_ll_bits", "accuracy", "ll_gain_ratio", "ll_gain_ratio_pop_static", "dw_corr", "fit_seconds"]]))
    for _, row in table[table["warnings"].astype(bool)].iterrows():
        log(f"      warning ({row['model']}): {row['warnings']}")
    for rule, dw in res.dw.items():
        log(f"      Δw map of {rule}: {recovery_verdict(dw.min_correlation)[1]}")
    table.to_csv(config.out / "summary.csv", index=False)
    (config.out / "summary.md").write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n")
    return write_figures(res, config.out / "figures")


def forecast_later_sessions(config: DemoConfig, rec: RecoveryConfig, res: RecoveryResult, log: Log) -> None:
    """Step 3: every rule fitted on the first sessions of all animals predicts the later ones (``forecast.csv``)."""
    batch = make_batch(res.simulation.trials)
    k = max(2, int(batch.session.max(1).values.min().item()) // 2)
    log(f"[3/7] forecast: fit every rule on sessions 1..{k - 1} of all animals (session {k} for early stopping), predict sessions {k + 1}..")
    fc = forecast_table(batch, rec.rules, k, rec.fit, progress=config.progress)
    log(format_table(fc))
    fc.to_csv(config.out / "forecast.csv", index=False)


def fit_twins(config: DemoConfig, rec: RecoveryConfig, res: RecoveryResult, log: Log) -> tuple[TwinStore, CohortFitReport]:
    """Step 4: the DNN population rule adapted per animal, stored with the animals' sessions."""
    log(f"[4/7] twins: DNN population rule adapted per animal, stored with the animals' sessions in {config.out / 'twins'}")
    store = TwinStore(config.out / "twins")
    rep = fit_cohort(res.simulation.trials, store, CohortFitConfig(spec=ModelSpec("dnn"), fit=rec.fit), progress=config.progress)
    SessionStore(store).add_table(res.simulation.trials)
    log(f"      {len(rep.versions)} twins ({rep.adaptation.value} adaptation, chosen on held-out future sessions), {rep.seconds:.0f} s")
    return store, rep


def search_curricula_through_twins(config: DemoConfig, store: TwinStore, rep: CohortFitReport, log: Log) -> SearchResult[CurriculumScore]:
    """Step 5: curriculum search through the stored twins to ``trained_1a`` (``curriculum/``)."""
    cfg = SearchConfig(n_trials=config.curricula, batch_size=4, n_rollouts=2, rescore_rollouts=4, seed=config.seed)
    search, _ = search_store(
        store,
        CurriculumSpace(),
        cfg,
        subjects=[v.subject for v in rep.versions],
        alias=None,
        backend=local_search(progress=config.progress),
        on_pool=lambda pool: log(f"[5/7] curriculum search through the {len(pool.subjects)} twins (Optuna TPE, {config.curricula} candidates) to trained_1a"),
    )
    search.save(config.out / "curriculum")
    d, bst, sp = search.default, search.best, search.predicted_speedup
    assert sp is not None
    log(f"      IBL default: {d.mean_trials.mean:.0f} trials to {cfg.criterion.label}; proposed: {bst.mean_trials.mean:.0f} (predicted speed-up {sp.mean:.1%}, {cfg.robust.level:.0%} interval [{sp.lo:.1%}, {sp.hi:.1%}], sessions cap {cfg.max_sessions})")
    if search.attribution is not None:
        log(f"      {len(search.attribution.kept)} of the best candidate's {len(search.attribution.changes)} changes help robustly and make the proposal")
    return search


def propose_for_one_animal(config: DemoConfig, store: TwinStore, rep: CohortFitReport, log: Log) -> None:
    """Step 6: the first animal's next session, proposed from its twin (``curriculum/next_session_*.yaml``)."""
    subject = sorted(v.subject for v in rep.versions)[0]
    twin = store.load_twin(subject)
    plan = propose_next_session(twin.model, twin.state, CurriculumSpace(), ProposalConfig(n_candidates=4, n_rollouts=8, horizon_sessions=8, seed=config.seed))
    (config.out / "curriculum" / f"next_session_{subject}.yaml").write_text(plan.curriculum.to_yaml())
    log(f"[6/7] next session for {subject}: {plan.explanation}; predicted accuracy {plan.forecast.accuracy.mean:.2f} [{plan.forecast.accuracy.lo:.2f}, {plan.forecast.accuracy.hi:.2f}]")


def service_round_trip(config: DemoConfig, res: RecoveryResult, log: Log) -> None:
    """Step 7: the gRPC service on loopback over a fresh store: Predict, NextSession, UploadSession."""
    from service.optimizer_bridge import optimizer_proposer
    from twin_cli.service_demo import service_roundtrip  # gRPC only here

    log(f"[7/7] the gRPC service (twin.v1) on 127.0.0.1 over a fresh store in {config.out / 'service'}: Predict, NextSession, UploadSession through the client")
    proposer = optimizer_proposer(config=ProposalConfig(n_candidates=4, n_rollouts=8, horizon_sessions=8, forecast_rollouts=64, seed=config.seed))
    rt = service_roundtrip(res.simulation.trials, config.out / "service", epochs=max(3, config.epochs // 3), propose=proposer)
    for line in rt.lines():
        log(f"      {line}")


def run_demo(config: DemoConfig = DemoConfig(), log: Log = print) -> None:
    """Run every step of the demo, writing under ``config.out`` and logging each step with ``log``."""
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rec = config.recovery()
    res = simulate_and_fit(config, rec, log)
    figs = held_out_summary(config, res, log)
    forecast_later_sessions(config, rec, res, log)
    store, rep = fit_twins(config, rec, res, log)
    search_curricula_through_twins(config, store, rep, log)
    propose_for_one_animal(config, store, rep, log)
    service_round_trip(config, res, log)
    log(
        f"wrote {out / 'summary.csv'}, {out / 'forecast.csv'}, {len(figs)} figures in {out / 'figures'}, models in {out / 'models'}, "
        f"twins in {out / 'twins'}, curricula in {out / 'curriculum'} ({time.perf_counter() - t0:.0f} s)"
    )


__all__ = ["DemoConfig", "run_demo"]
