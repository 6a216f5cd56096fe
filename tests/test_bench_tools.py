"""The arithmetic of two bench tools: bench/profile_summary.py (a profiled step's kernels by kind) and
bench/sweep_bound.py (a stored sweep's work at measured kernel times)."""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


profile_summary, sweep_bound = _bench("profile_summary"), _bench("sweep_bound")


@pytest.mark.parametrize("name, kind", [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "matmul"),
    ("nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNT", "matmul"),
    ("triton_tem_fused_addmm_4", "matmul"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", "attention"),
    ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits>", "attention"),
    ("triton_red_fused__log_softmax_backward_data_nll_loss_backward_7", "loss"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4>>", "optimizer"),
    ("triton_per_fused_add_native_layer_norm_native_layer_norm_backward_12", "layer norm"),
    # the final norm's backward fused with the tied embedding's gradient, named after the loss too
    ("triton_per_fused__to_copy__unsafe_view_add_embedding_dense_backward_logsumexp_native_layer_norm_0",
     "layer norm"),
    ("triton_red_fused__to_copy_arange_div_eq_exp_logsumexp_split_sub_unsqueeze_view_24", "loss"),
    ("triton_poi_fused_gelu_gelu_backward_9", "gelu"),
    ("Memcpy HtoD (Pinned -> Device)", "copy"),
    ("triton_poi_fused__to_copy_cat_mul_neg_slice_3", "other"),  # RoPE's rotation
])
def test_kernels_are_told_apart_by_name(name, kind):
    assert profile_summary.kind_of(name) == kind


def test_summaries_add_up_per_variant(tmp_path, capsys, monkeypatch):
    rows = [{"variant": "a", "name": "nvjet_tst_1", "calls": 4, "gpu_us": 600.0},
            {"variant": "a", "name": "triton_poi_fused_add_1", "calls": 2, "gpu_us": 400.0},
            {"variant": "b", "name": "triton_poi_fused_gelu_2", "calls": 1, "gpu_us": 50.0}]
    summary = profile_summary.summarize(rows)
    assert dict(summary["a"]["kinds"]) == {"matmul": 600.0, "other": 400.0}
    assert summary["a"]["other"] == [(400.0, "triton_poi_fused_add_1")]
    assert dict(summary["b"]["kinds"]) == {"gelu": 50.0}

    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setattr("sys.argv", ["profile_summary.py", str(path), "--tokens", "1000000"])
    profile_summary.main()
    out = capsys.readouterr().out
    assert "== a: 1.0 ms of kernels" in out
    assert "matmul          0.60 ms  60.0%   0.600 ns/token" in out


def test_step_seconds_sum_a_variants_kernels_and_interpolate_between_lengths():
    profile = [{"variant": "64:auto:16384:0:bf16", "name": "a", "gpu_us": 3000.0},
               {"variant": "64:auto:16384:0:bf16", "name": "b", "gpu_us": 1000.0},
               {"variant": "64:auto:16384:4096:bf16", "name": "a", "gpu_us": 5000.0},  # slower: not the price
               {"variant": "4096:auto:16384:0:bf16", "name": "a", "gpu_us": 16000.0}]
    step_s = sweep_bound.step_seconds(profile)
    assert step_s(64) == pytest.approx(0.004) and step_s(4096) == pytest.approx(0.016)
    assert step_s(512) == pytest.approx(0.008)  # half way in log length: the geometric mean
    assert step_s(16384) == pytest.approx(0.016)  # beyond the profiled lengths: the nearest


def test_a_gpt_trials_steps_and_evaluations_are_priced():
    trials = pd.DataFrame([{"step": 120, "context_length": 64, "data_size": 1000, "tokens_per_step": 1000,
                            "config.training.eval_every": 50, "config.training.eval_tokens": 3000}])
    [row] = sweep_bound.sweep_bound(trials, lambda length: 0.01)
    assert row["evaluations"] == 3  # after steps 50, 100 and the last, 120
    assert row["train_s"] == pytest.approx(1.2)
    assert row["eval_s"] == pytest.approx(3 * 3000 / 1000 / 3 * 0.01)


def test_synthetic_points_are_priced_by_epochs_and_steps_per_epoch():
    trials = pd.DataFrame({"data_size": [50_000, 2_000_000, 75_000], "epoch": [10, 30, 4],
                           "config.training.batch_size": [10_000] * 3})
    train, validation = sweep_bound.synthetic_bound(trials, step_ms=12.0, val_ms=24.0)
    # steps per epoch 5, 200 and 8 (a last batch of 5,000 rows); a member costs 1/12 of the group
    assert train == pytest.approx((10 * 5 + 30 * 200 + 4 * 8) * 1.0 / 1e3)
    assert validation == pytest.approx((10 + 30 + 4) * 2.0 / 1e3)
