"""A probe that times out once is sent again with twice the time before its node is taken
for stalled (a lost SYN on a congested path costs TCP 1-3 s); a refusal is final at once."""

import asyncio

from node_app.recovery import STALLED, Crew, Slot


class ScriptedCrew(Crew):
    """A Crew whose sends answer from a script (no network): records each send's timeout."""

    def __init__(self, answers, probe_timeout_s=2.0):
        self.probe_timeout_s, self.answers, self.timeouts = probe_timeout_s, list(answers), []

    async def send(self, slot, probe=False, timeout_s=None):
        assert probe
        self.timeouts.append(timeout_s)
        return self.answers.pop(0)


SLOT = Slot("mapper", 0, (2, 3))


def probe(answers):
    crew = ScriptedCrew(answers)
    return asyncio.run(crew.probe(SLOT)), crew.timeouts


def test_a_slow_first_answer_is_not_a_death():
    assert probe([f"{STALLED} 2 s (stalled)", None]) == (None, [2.0, 4.0])


def test_two_silent_probes_make_a_stalled_node():
    why, timeouts = probe([f"{STALLED} 2 s (stalled)", f"{STALLED} 4 s (stalled)"])
    assert why.startswith(STALLED) and "4 s" in why and timeouts == [2.0, 4.0]


def test_a_refusal_or_an_unreachable_node_is_final_at_once():
    assert probe(["unreachable (connection refused)"]) == ("unreachable (connection refused)", [2.0])
    assert probe([None]) == (None, [2.0])
