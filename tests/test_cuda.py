"""What only CUDA has: the build of the CUDA kernels, CPU<->CUDA bit equality (ε stream, outputs,
KL), device mixing, memory, streams, several GPUs, CUDA graphs and tensors past 2^31 elements.
Every other CUDA check is the `cuda` parameter of the op tests (tests/test_reparameterize.py,
tests/test_kl.py, tests/test_fused.py, tests/test_sampler.py, tests/test_api.py,
tests/test_opcheck_compile.py, ...). Every test here needs a GPU and skips without one."""

from __future__ import annotations

import pytest
import torch
from helpers import DTYPES, compute_dtype, dtype_id, generator, latent, randn, tensor_priors

import vae_ext
from vae_ext import reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

OPS = torch.ops.vae_ext
CUDA = torch.device("cuda")
SEED = 0x5DEECE66D
GIB = 1 << 30


def cuda(*tensors):
    return tuple(None if t is None else t.to(CUDA) for t in tensors)


def seed_on(device, value=SEED):
    return torch.tensor(value, dtype=torch.int64, device=device)


def case(shape, dtype, kind="standard", seed=0):
    """CPU inputs: mu, logvar, eps, prior_mu, prior_logvar, grad_z, grad_kl."""
    mu, logvar = latent(shape, dtype, seed=seed)
    prior_mu, prior_logvar = tensor_priors(kind, shape, dtype)
    gen = generator(seed + 100)
    eps = randn(shape, dtype, gen)
    grad_z = randn(shape, dtype, gen, shift=0.25)
    grad_kl = randn(shape[:1], compute_dtype(dtype), gen, shift=0.5)
    return mu, logvar, eps, prior_mu, prior_logvar, grad_z, grad_kl


def test_cuda_kernels_are_built():
    info = vae_ext.build_info()
    assert info["cuda_kernels"] is True, info
    assert torch._C._dispatch_has_kernel_for_dispatch_key("vae_ext::reparameterize_kl", "CUDA")


# --------------------------------------------------------------------------- devices


def test_inputs_on_other_devices_are_rejected():
    mu, logvar = (torch.randn(4, 8, device=CUDA) for _ in range(2))
    with pytest.raises(ValueError, match="seed"):
        OPS.reparameterize_sampled(mu, logvar, seed_on("cpu"))
    with pytest.raises(ValueError, match="prior_mu"):
        OPS.gaussian_kl(mu, logvar, torch.zeros(8), None)


# --------------------------------------------------------------------------- CPU agreement


@pytest.mark.parametrize("shape", [(5, 7), (4, 1023), (2, 65536 + 3), (2, 3, 5, 7), (64, 32)], ids=str)
def test_eps_stream_matches_cpu_and_reference_bitwise(shape):
    # With mu = 0 and logvar = 0, z = 0 + eps * exp(0) is eps itself, exactly.
    zeros = torch.zeros(shape)
    z = OPS.reparameterize_sampled(*cuda(zeros, zeros), seed_on(CUDA)).cpu()
    assert torch.equal(z, OPS.reparameterize_sampled(zeros, zeros, seed_on("cpu")))
    assert torch.equal(z.reshape(-1), reference.normals(SEED, zeros.numel()))
    assert z.std().item() == pytest.approx(1.0, abs=0.5)  # not a constant


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", [(5, 7), (4, 1023), (33, 512), (4, 100000)], ids=str)
def test_outputs_match_cpu_bitwise(shape, dtype):
    # The float math (csrc/vae_math.h) is plain IEEE arithmetic on both devices, and the KL
    # is summed in the order of csrc/row_sum.h on both (docs/determinism.md).
    mu, logvar, _, prior_mu, prior_logvar, grad_z, grad_kl = case(shape, dtype, "full")
    cpu_seed, gpu_seed = seed_on("cpu"), seed_on(CUDA)
    z_cpu, kl_cpu = OPS.reparameterize_kl(mu, logvar, None, cpu_seed, prior_mu, prior_logvar)
    z_gpu, kl_gpu = OPS.reparameterize_kl(*cuda(mu, logvar), None, gpu_seed, *cuda(prior_mu, prior_logvar))
    assert torch.equal(z_gpu.cpu(), z_cpu)
    assert torch.equal(kl_gpu.cpu(), kl_cpu)
    cpu = OPS.reparameterize_kl_backward(grad_z, grad_kl, mu, logvar, None, cpu_seed, prior_mu, prior_logvar, True)
    gpu = OPS.reparameterize_kl_backward(
        *cuda(grad_z, grad_kl, mu, logvar), None, gpu_seed, *cuda(prior_mu, prior_logvar), True
    )
    for g, c in zip(gpu, cpu):
        assert torch.equal(g.cpu(), c)


KL_ROW_LENGTHS = (1, 2, 3, 5, 8, 13, 16, 31, 64, 100, 127, 128, 129, 257, 1000, 1023, 4096, 4097, 100000, 131072)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_kl_is_the_cpu_and_reference_kl_bitwise(dtype):
    # Every path and plan sums in one order: KL alone, with z from a seed, with z from an
    # eps that is aligned or not (the scalar path), few rows (split rows) and many.
    for cols in KL_ROW_LENGTHS:
        for rows in (1, 3, 700):
            if rows * cols > 1 << 24:
                continue
            mu, logvar, _, prior_mu, prior_logvar, _, _ = case((rows, cols), dtype, "full", seed=cols)
            kl_cpu = OPS.gaussian_kl(mu, logvar, prior_mu, prior_logvar)
            assert torch.equal(kl_cpu, reference.gaussian_kl(mu, logvar, prior_mu, prior_logvar))
            on_gpu = cuda(mu, logvar, prior_mu, prior_logvar)
            assert torch.equal(OPS.gaussian_kl(*on_gpu).cpu(), kl_cpu), (rows, cols)
            _, kl_sampled = OPS.reparameterize_kl(on_gpu[0], on_gpu[1], None, seed_on(CUDA), *on_gpu[2:])
            assert torch.equal(kl_sampled.cpu(), kl_cpu), (rows, cols)
            eps = torch.randn(rows * cols + 1, device=CUDA).to(dtype)[1:].view(rows, cols)
            _, kl_given = OPS.reparameterize_kl(on_gpu[0], on_gpu[1], eps, None, *on_gpu[2:])
            assert torch.equal(kl_given.cpu(), kl_cpu), (rows, cols)


# --------------------------------------------------------------------------- memory, streams, devices


def test_strided_rows_are_not_copied():
    h = torch.randn(256, 2 * 4096, device=CUDA)
    mu, logvar = h.chunk(2, dim=1)
    seed = seed_on(CUDA)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    z, kl = OPS.reparameterize_kl(mu, logvar, None, seed, None, None)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    outputs = z.numel() * z.element_size() + kl.numel() * kl.element_size()
    assert extra < outputs + mu.numel() * mu.element_size() // 2, (extra, outputs)


def test_runs_on_the_current_stream():
    mu, logvar, *_ = case((64, 256), torch.float32)
    mu, logvar = cuda(mu, logvar)
    expected, expected_kl = OPS.reparameterize_kl(mu, logvar, None, seed_on(CUDA), None, None)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        seed = seed_on(CUDA)
        z, kl = OPS.reparameterize_kl(mu, logvar, None, seed, None, None)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(z, expected) and torch.equal(kl, expected_kl)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_runs_on_the_inputs_device():
    mu, logvar, *_ = case((16, 100), torch.float32)
    device = torch.device("cuda", 1)
    with torch.cuda.device(0):
        z, kl = OPS.reparameterize_kl(mu.to(device), logvar.to(device), None, seed_on(device), None, None)
    z_ref, kl_ref = OPS.reparameterize_kl(*cuda(mu, logvar), None, seed_on(CUDA), None, None)
    assert z.device == device and torch.equal(z.cpu(), z_ref.cpu()) and torch.equal(kl.cpu(), kl_ref.cpu())


# --------------------------------------------------------------------------- CUDA graphs


def capture(fn):
    """Warms fn up on a side stream, captures it in a CUDA graph; returns (graph, outputs)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph, outputs


def test_graph_replay_reads_the_seed_tensor():
    mu, logvar, *_ = cuda(*case((32, 100), torch.float32))
    seed = seed_on(CUDA)
    graph, (z, kl) = capture(lambda: OPS.reparameterize_kl(mu, logvar, None, seed, None, None))
    graph.replay()
    first = z.clone()
    assert torch.equal(first, OPS.reparameterize_sampled(mu, logvar, seed_on(CUDA)))
    graph.replay()
    assert torch.equal(z, first)  # same seed, same z
    seed.fill_(987654321)
    graph.replay()
    assert not torch.equal(z, first)
    assert torch.equal(z, OPS.reparameterize_sampled(mu, logvar, seed_on(CUDA, 987654321)))
    assert torch.equal(kl, OPS.gaussian_kl(mu, logvar, None, None))


def test_graph_replay_of_forward_and_backward():
    mu, logvar, _, prior_mu, prior_logvar, grad_z, grad_kl = cuda(*case((3, 65536 + 3), torch.float32, "full"))
    seed = seed_on(CUDA)

    def step():
        z, kl = OPS.reparameterize_kl(mu, logvar, None, seed, prior_mu, prior_logvar)
        grads = OPS.reparameterize_kl_backward(grad_z, grad_kl, mu, logvar, None, seed, prior_mu, prior_logvar, True)
        return (z, kl) + tuple(grads)

    graph, outputs = capture(step)
    seed.fill_(42)
    graph.replay()
    expected = step()
    for got, want in zip(outputs, expected):
        assert torch.equal(got, want)


def test_functional_api_draws_a_fresh_seed_each_replay(monkeypatch):
    # draw_seed's random_ uses the graph-safe CUDA generator: each replay advances its offset.
    # The fallback cannot be captured (it reads the seed on the host), so use the kernels.
    monkeypatch.setattr(vae_ext._ops, "ops", vae_ext._ops.compiled)
    mu, logvar, *_ = cuda(*case((64, 1024), torch.float32))

    def step():
        seed = vae_ext.draw_seed(CUDA)
        z_api, kl = vae_ext.reparameterize_kl(mu, logvar)
        return seed, OPS.reparameterize_sampled(mu, logvar, seed), z_api, kl

    graph, (seed, z_seeded, z_api, kl) = capture(step)
    replays = []
    for _ in range(2):
        graph.replay()
        replays.append((seed.clone(), z_seeded.clone(), z_api.clone()))
        assert torch.equal(z_seeded, OPS.reparameterize_sampled(mu, logvar, seed.clone()))
        eps = (z_api - mu) / torch.exp(0.5 * logvar)
        assert abs(eps.mean().item()) < 0.02 and abs(eps.std().item() - 1.0) < 0.02
    assert not torch.equal(replays[0][0], replays[1][0])
    assert not torch.equal(replays[0][2], replays[1][2])
    assert torch.equal(kl, OPS.gaussian_kl(mu, logvar, None, None))


# --------------------------------------------------------------------------- past 2^31 elements


def skip_unless_free(nbytes):
    free, _ = torch.cuda.mem_get_info()
    if free < nbytes:
        pytest.skip(f"needs {nbytes / GIB:.0f} GiB of free GPU memory, {free / GIB:.0f} GiB free")


def check_window(z, first, count, row_length, shift):
    """z's flat elements [first, first + count) are shift + eps, eps the reference stream."""
    row, col = divmod(first, row_length)
    got = z[row, col : col + count].cpu()
    want = (reference.normals(SEED, count, start=first) + shift).to(z.dtype)
    assert torch.equal(got, want)


def test_more_than_2_31_elements_long_rows():
    rows, cols = 2, (1 << 30) + 5  # flat indices past 2^31 in row 1; cols % 4 != 0
    skip_unless_free(36 * GIB)
    mu = torch.full((rows, cols), 0.5, dtype=torch.float16, device=CUDA)
    logvar = torch.zeros_like(mu)  # exp(0) = 1 exactly: z = 0.5 + eps, rounded once
    seed = seed_on(CUDA)
    z, kl = OPS.reparameterize_kl(mu, logvar, None, seed, None, None)
    for first in (0, (1 << 31) - 3, rows * cols - 7):
        check_window(z, first, 7, cols, 0.5)
    # float32 sums of ~1000 per-block partials near 1.3e8: n * 2^-24 relative at worst.
    torch.testing.assert_close(kl.cpu(), torch.full((rows,), 0.125 * cols), rtol=1e-4, atol=0)
    del z
    grad_z = torch.full_like(mu, 0.25)
    grad_kl = torch.tensor([1.5, -0.5], device=CUDA)
    g_mu, g_lv, _, _ = OPS.reparameterize_kl_backward(grad_z, grad_kl, mu, logvar, None, seed, None, None, False)
    # d/dmu = 0.25 + g * 0.5; d/dlogvar = 0.25 * 0.5 * eps (expm1(0) = 0 drops the KL term).
    assert torch.equal(g_mu[:, -3:].cpu(), torch.tensor([[1.0] * 3, [0.0] * 3], dtype=torch.float16))
    first = rows * cols - 5
    want = (reference.normals(SEED, 5, start=first) * 0.125).to(torch.float16)
    assert torch.equal(g_lv[1, -5:].cpu(), want)


def test_more_than_2_31_rows():
    rows = (1 << 31) + 6  # one element per row: row indices past 2^31
    skip_unless_free(28 * GIB)
    mu = torch.full((rows, 1), 0.5, dtype=torch.float16, device=CUDA)
    logvar = torch.zeros_like(mu)
    z, kl = OPS.reparameterize_kl(mu, logvar, None, seed_on(CUDA), None, None)
    for first in (0, (1 << 31) - 2, rows - 6):
        got = z[first : first + 6, 0].cpu()
        assert torch.equal(got, (reference.normals(SEED, 6, start=first) + 0.5).to(torch.float16))
    assert torch.equal(kl[-4:].cpu(), torch.full((4,), 0.125))
    assert kl.min().item() == 0.125 and kl.max().item() == 0.125


# --------------------------------------------------------------------------- CPU scalars and generators


def test_cpu_generator_draws_the_seed_for_cuda_latents():
    mu, logvar = cuda(*latent((4, 6), torch.float32))
    z = vae_ext.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(5))
    seed = vae_ext.draw_seed("cpu", torch.Generator().manual_seed(5))
    assert torch.equal(z, OPS.reparameterize_sampled(mu, logvar, seed.to(CUDA)))


def test_cpu_scalar_prior_beside_cuda_latents_gets_its_gradient_on_the_cpu():
    mu, logvar = cuda(*latent((4, 6), torch.float32))
    prior_mu = torch.tensor(0.25, requires_grad=True)
    prior_logvar = torch.tensor(-0.5, requires_grad=True)
    kl = vae_ext.gaussian_kl(mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar, reduction="sum")
    loss = vae_ext.ELBOLoss("gaussian")(mu, mu, mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar)
    grads = torch.autograd.grad(kl + loss, (prior_mu, prior_logvar))
    assert all(g.device.type == "cpu" for g in grads)
    expected = vae_ext.gaussian_kl(mu.cpu(), logvar.cpu(), prior_mu=0.25, prior_logvar=-0.5, reduction="sum")
    torch.testing.assert_close(kl.cpu(), expected)
