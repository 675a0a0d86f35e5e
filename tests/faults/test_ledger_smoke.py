from tests.faults.ledger import Ledger


def test_ledger_counts_what_it_is_told() -> None:
    led = Ledger()
    with led.fault("x", 2):
        pass
    try:
        with led.fault("y"):
            raise RuntimeError
    except RuntimeError:
        pass
    led.events(["a", "b"], ["a", "a"], ["p1", "p1", "p2"])
    led.hostile(5)
    assert (led.faults_injected, led.faults_survived) == (3, 2)
    assert (led.events_lost, led.phase_events_duplicated, led.hostile_inputs_tried) == (1, 1, 5)
