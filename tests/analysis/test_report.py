import json

import numpy as np
import pytest
import torch

from entangle.analysis import EntanglementTracker, analyze_model, entropy, model_schmidt_values, page_entropy
from entangle.models.descriptor_tn import MERARegressor, MPOConfig, MPORegressor, TreeConfig, fit_model

DIMS = [2, 3, 2, 3, 2]


def test_analyze_mera_writes_pngs_and_summary(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, *DIMS, generator=g, dtype=torch.float64)
    y = x.reshape(30, -1) @ torch.randn(72, generator=g, dtype=torch.float64)
    model = MERARegressor(TreeConfig(dims=DIMS, chi=3))
    tracker = EntanglementTracker(every=2)
    fit_model(model, x, y, epochs=4, patience=10, callback=tracker)
    summary = analyze_model(model, x, y.numpy(), tmp_path, tracker=tracker, tsne_max_iter=250)
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    for name in summary["files"]:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "latent_tsne.png" in summary["files"] and "spacing_ratios.png" in summary["files"]
    cuts = summary["bipartitions"]
    assert set(cuts) == {"alpha1 alpha2 | n1 n2 l", "alpha1 n1 | alpha2 n2 l"}
    chem = cuts["alpha1 alpha2 | n1 n2 l"]
    assert chem["entropy"] == pytest.approx(entropy(model_schmidt_values(model, ["alpha1", "alpha2"])))
    assert chem["page_entropy"] == pytest.approx(page_entropy(6, 12))
    assert sum(chem["spectrum"]) == pytest.approx(1.0)
    assert summary["training"]["alpha1 n1 | alpha2 n2 l"]["epochs"] == [0, 2]


def test_analyze_mpo_uses_choi_state_and_custom_bipartition(tmp_path):
    model = MPORegressor(MPOConfig(dims=DIMS, chi=2))
    summary = analyze_model(model, out_dir=tmp_path, bipartitions={"l": ["l"]})
    assert summary["state_shape"] == [4, 9, 4, 9, 4]
    assert summary["bipartitions"]["l"]["d_A"] == 4
    assert len(summary["bond_entropies"]) == 4 and np.all(np.asarray(summary["bond_entropies"]) >= 0)
    assert "latent" not in summary
