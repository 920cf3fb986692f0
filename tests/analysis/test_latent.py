import numpy as np
import pytest
import torch

from entangle.analysis.latent import default_perplexity, hidden_representations, tsne_embeddings
from entangle.errors import ConfigError
from entangle.models.baselines import DenseNNConfig, DenseNNRegressor
from entangle.models.descriptor_tn import MERARegressor, MPSConfig, MPSRegressor, TreeConfig, TTNRegressor

DIMS = [2, 3, 2, 3, 2]


def test_ttn_hidden_levels_contract_to_the_output():
    model = TTNRegressor(TreeConfig(dims=DIMS, chi=4))
    x = torch.randn(6, *DIMS, dtype=torch.float64)
    reps, names = hidden_representations(model, x)
    assert names == ["input", "level 1", "level 2"]
    assert [r.shape for r in reps] == [(6, 72), (6, 4 * 4 * 2), (6, 4 * 2)]
    # the last hidden level (legs c3, l) contracted with the root gives the prediction
    root = model.tensors[-1].detach()[:, :, 0]
    raw = torch.einsum("zab,ab->z", torch.as_tensor(reps[-1]).reshape(6, 4, 2), root) + model.bias.detach()
    torch.testing.assert_close(model(x), model.target_scale * raw + model.target_shift)


def test_mera_and_dense_nn_have_hidden_levels_mps_has_none():
    x = torch.randn(5, *DIMS, dtype=torch.float64)
    reps, _ = hidden_representations(MERARegressor(TreeConfig(dims=DIMS, chi=3)), x)
    assert [r.shape[1] for r in reps] == [72, 3 * 3 * 2, 3 * 2]
    reps, _ = hidden_representations(DenseNNRegressor(DenseNNConfig(dims=DIMS, hidden=[8, 4])), x)
    assert [r.shape[1] for r in reps] == [72, 8, 4]
    with pytest.raises(ConfigError):
        hidden_representations(MPSRegressor(MPSConfig(dims=DIMS)), x)


def test_tsne_separates_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 10))
    b = rng.normal(size=(20, 10)) + 20.0
    (emb,) = tsne_embeddings([np.vstack([a, b])], perplexity=default_perplexity(40), seed=0)
    assert emb.shape == (40, 2) and np.isfinite(emb).all()
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1) + np.diag(np.full(40, np.inf))
    nearest = dist.argmin(1)
    assert ((nearest < 20) == (np.arange(40) < 20)).all()  # every nearest neighbour is in the same cluster
    with pytest.raises(ConfigError):
        tsne_embeddings([a], perplexity=30.0)
    assert default_perplexity(1000) == 30.0 and default_perplexity(31) == 10.0
