"""Trial ids and config hashes: built and read back in one place (`ctxscale.identity`)."""
import pandas as pd

from ctxscale import store
from ctxscale.identity import coordinates_of, grid_trial_id, hash_in_trial_id


def test_every_training_id_the_code_builds_is_read_back():
    for length, size, seed in [(8, 1000, 0), (24, 50_000, -3), (4096, 10**9, 17)]:
        trial_id = grid_trial_id(length, size, seed, "0a1b2c3d")
        assert coordinates_of(trial_id) == {"context_length": length, "data_size": size, "seed": seed}
        assert hash_in_trial_id(trial_id) == "0a1b2c3d"
    # not a training id: a parity id, a hash of another length, a hand-written name
    for other in ["d10_s0_0a1b2c3d", "l8_d10_s0_0a1b2c", "l8_d10_s0_0a1b2c3d4", "run-1"]:
        assert coordinates_of(other) is None and hash_in_trial_id(other) is None


def test_the_store_gives_rows_without_a_hash_the_one_their_id_ends_in():
    frame = pd.DataFrame({"trial_id": ["l8_d10_s-1_0a1b2c3d", "l8_d10_s0_0a1b2c3d", "mine"],
                          "config_hash": [None, "ffffffff", None]})
    filled = store._with_config_hash(frame)
    assert list(filled["config_hash"][:2]) == ["0a1b2c3d", "ffffffff"] and pd.isna(filled["config_hash"][2])
