"""bench/profile_summary.py: a profiled step's kernels land in the right kind and sum per variant."""
import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "profile_summary.py"
_spec = importlib.util.spec_from_file_location("profile_summary", _PATH)
profile_summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_summary)


@pytest.mark.parametrize("name, kind", [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "matmul"),
    ("nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNT", "matmul"),
    ("triton_tem_fused_addmm_4", "matmul"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", "attention"),
    ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits>", "attention"),
    ("triton_red_fused__log_softmax_backward_data_nll_loss_backward_7", "loss"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4>>", "optimizer"),
    ("triton_per_fused_add_native_layer_norm_native_layer_norm_backward_12", "layer norm"),
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
