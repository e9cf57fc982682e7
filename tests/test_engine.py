"""The model step's engine alone: fake stages, no Dagster, no models."""

import asyncio
import sys

import pytest

from assets.engine import BlockingCheckFailed, Engine, Failed, Judged, Made, Node, Reused, Settled, UpstreamFailed

# a -> b -> d, a -> c -> d: a diamond, like concept -> image/voice -> video.
NODES = [Node("a", {}), Node("b", {"x": "a"}), Node("c", {"x": "a"}), Node("d", {"left": "b", "right": "c"})]


class FakeStages:
    """Stage work that records when it ran; delays and failures per (stage, key)."""

    def __init__(self, delays=None, fail=(), blocked=(), stored=None, reusable=()):
        self.delays, self.fail, self.blocked = delays or {}, set(fail), set(blocked)
        self.stored, self.reusable = stored or {}, set(reusable)
        self.log: list[tuple[str, str, str]] = []  # (event, stage, key)
        self.events: list = []

    async def make(self, stage, key, inputs):
        self.log.append(("start", stage, key))
        await asyncio.sleep(self.delays.get((stage, key), self.delays.get(stage, 0.0)))
        if (stage, key) in self.fail:
            raise RuntimeError(f"{stage} broke on {key}")
        self.log.append(("end", stage, key))
        return f"{stage}({key}:{','.join(sorted(str(v) for v in inputs.values()))})", {"stage": stage}

    async def reuse(self, stage, key, inputs):
        return f"stored {stage}({key})" if (stage, key) in self.reusable else None

    async def check(self, stage, key, manifest, inputs):
        failed = ("loud: too loud",) if (stage, key) in self.blocked else ()
        return Judged(manifest, {"loud": not failed}, failed)

    async def load_stored(self, stage, key):
        return self.stored[(stage, key)]

    def engine(self, selected=("a", "b", "c", "d")):
        return Engine(
            NODES,
            list(selected),
            make=self.make,
            reuse=self.reuse,
            check=self.check,
            load_stored=self.load_stored,
            emit=self.events.append,
        )

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def run(coro):
    return asyncio.run(coro)


def test_each_stage_runs_after_its_inputs_and_results_flow_on():
    stages = FakeStages()
    run(stages.engine().run(["k1"]))
    made = {e.stage: e.manifest for e in stages.of(Made)}
    assert made["d"] == "d(k1:b(k1:a(k1:)),c(k1:a(k1:)))"
    order = [stage for event, stage, _ in stages.log if event == "start"]
    assert order[0] == "a" and order[-1] == "d"
    assert sorted(e.stage for e in stages.of(Settled)) == ["a", "b", "c", "d"]
    assert stages.of(Settled)[-1].stage == "d"
    assert all(isinstance(e, (Made, Settled)) for e in stages.events)


def test_variants_pipeline_a_fast_variant_finishes_before_a_slow_one_starts_its_second_stage():
    # k-slow's first stage takes long; k-fast goes through every stage meanwhile.
    stages = FakeStages(delays={("a", "k-slow"): 0.3})
    run(stages.engine().run(["k-slow", "k-fast"]))
    position = {(event, stage, key): i for i, (event, stage, key) in enumerate(stages.log)}
    assert position[("end", "d", "k-fast")] < position[("start", "b", "k-slow")]
    # A stage is settled only when every variant is done with it.
    settled = [i for i, e in enumerate(stages.events) if isinstance(e, Settled) and e.stage == "a"]
    made_slow_a = [i for i, e in enumerate(stages.events) if isinstance(e, Made) and (e.stage, e.key) == ("a", "k-slow")]
    assert settled[0] > made_slow_a[0]


def test_independent_stages_of_one_variant_run_concurrently():
    stages = FakeStages(delays={"b": 0.2, "c": 0.2})
    started = asyncio.run(_timed(stages.engine().run(["k"])))
    assert started < 0.35  # b and c overlapped (0.4 s in sequence)


async def _timed(coro):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await coro
    return loop.time() - t0


def test_one_variants_failure_stops_what_reads_it_and_nothing_else():
    stages = FakeStages(fail={("b", "k1")})
    run(stages.engine().run(["k1", "k2"]))
    failed = {(e.stage, e.key): e for e in stages.of(Failed)}
    assert failed[("b", "k1")].cause == "error" and "b broke on k1" in str(failed[("b", "k1")].error)
    assert failed[("d", "k1")].cause == "upstream" and isinstance(failed[("d", "k1")].error, UpstreamFailed)
    made = {(e.stage, e.key) for e in stages.of(Made)}
    assert ("c", "k1") in made  # the sibling branch of the failed variant still runs
    assert {("a", "k2"), ("b", "k2"), ("c", "k2"), ("d", "k2")} <= made
    assert ("d", "k1") not in made
    assert sorted(e.stage for e in stages.of(Settled)) == ["a", "b", "c", "d"]


def test_a_blocking_check_keeps_the_output_and_stops_downstream():
    stages = FakeStages(blocked={("a", "k1")})
    run(stages.engine().run(["k1", "k2"]))
    blocked = [e for e in stages.of(Made) if e.blocked]
    assert [(e.stage, e.key) for e in blocked] == [("a", "k1")] and e_outcome(blocked[0]) is False
    failed = {(e.stage, e.key): e.cause for e in stages.of(Failed)}
    assert failed == {("b", "k1"): "upstream", ("c", "k1"): "upstream", ("d", "k1"): "upstream"}
    assert ("start", "b", "k1") not in stages.log
    assert ("end", "d", "k2") in stages.log


def e_outcome(made: Made):
    return made.outcomes["loud"]


def test_reused_stages_are_not_made_and_feed_what_follows():
    stages = FakeStages(reusable={("a", "k1"), ("b", "k1")})
    run(stages.engine().run(["k1"]))
    assert {(e.stage, e.key) for e in stages.of(Reused)} == {("a", "k1"), ("b", "k1")}
    assert ("start", "a", "k1") not in stages.log
    made = {e.stage: e.manifest for e in stages.of(Made)}
    assert made["c"] == "c(k1:stored a(k1))"
    assert "stored b(k1)" in made["d"]


def test_unselected_stages_are_read_from_the_store():
    stages = FakeStages(stored={("b", "k1"): "B", ("c", "k1"): "C"})
    run(stages.engine(selected=["d"]).run(["k1"]))
    assert [e.manifest for e in stages.of(Made)] == ["d(k1:B,C)"]
    assert [e.stage for e in stages.of(Settled)] == ["d"]


def test_a_missing_stored_input_fails_the_variant_as_upstream():
    stages = FakeStages(stored={("b", "k1"): "B"})  # no stored c
    run(stages.engine(selected=["d"]).run(["k1"]))
    (failed,) = stages.of(Failed)
    assert (failed.stage, failed.cause) == ("d", "upstream") and isinstance(failed.error.__cause__, KeyError)


def test_cancellation_stops_every_stage_in_flight():
    stages = FakeStages(delays={"a": 10.0})

    async def cancel_soon():
        task = asyncio.ensure_future(stages.engine().run(["k1", "k2"]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    leftover = run(cancel_soon())
    assert leftover == []
    assert not [e for e in stages.events if isinstance(e, Made)]


def test_an_interrupt_is_not_a_variants_failure():
    class Interrupting(FakeStages):
        async def make(self, stage, key, inputs):
            if stage == "b":
                raise KeyboardInterrupt
            return await super().make(stage, key, inputs)

    stages = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        run(stages.engine().run(["k1"]))


def test_no_variants_settles_every_stage_at_once():
    stages = FakeStages()
    run(stages.engine().run([]))
    assert [e.stage for e in stages.events] == ["a", "b", "c", "d"]


def test_selecting_an_unknown_stage_is_an_error():
    with pytest.raises(ValueError, match="not in the pipeline"):
        FakeStages().engine(selected=["a", "zz"])


def test_engine_imports_no_dagster():
    import subprocess

    # `assets/__init__` builds Dagster assets: load the engine module by path, as a plain module.
    code = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('engine', 'assets/engine.py'); "
        "m = importlib.util.module_from_spec(spec); sys.modules['engine'] = m; spec.loader.exec_module(m); print('dagster' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=__file__.rsplit("/tests/", 1)[0])
    assert out.stdout.strip() == "False"
    assert BlockingCheckFailed.__module__ == "assets.engine"


def test_a_stage_sent_back_by_its_check_is_made_again_until_it_stands():
    stages = FakeStages()
    verdicts = iter([True, True, False])  # sent back twice, then kept

    async def check(stage, key, manifest, inputs):
        retry = stage == "a" and next(verdicts)
        return Judged(manifest, {}, (), retry=retry)

    events = []
    engine = Engine(NODES, ["a", "b"], make=stages.make, check=check, load_stored=stages.load_stored, emit=events.append)
    asyncio.run(engine.run(["k"]))
    assert [entry for entry in stages.log if entry[0] == "start"] == [("start", "a", "k")] * 3 + [("start", "b", "k")]
    made = [e for e in events if isinstance(e, Made)]
    assert [(e.stage, e.key) for e in made] == [("a", "k"), ("b", "k")]  # one Made per stage: the output that stands
