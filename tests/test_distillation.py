"""Progressive distillation's math (simple_ddpm.distillation) on Gaussian data, where the teacher's DDIM map is
linear and every quantity has a closed form, and the distilled scheduler and pipeline."""

import math
from types import SimpleNamespace

import pytest
import torch
from gaussian_denoiser import GaussianDenoiser

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm.distillation import (
    DATA,
    distillation_chains,
    distillation_loss,
    halved_chain,
    paired_distance,
    round_steps,
    teacher_target,
    teacher_x0,
    trailing_timesteps,
)

SHAPE = (1, 2, 2)  # C, H, W: D = 4 pixels with correlations between them
D = math.prod(SHAPE)


def gaussian_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    root = 0.3 * torch.randn(D, D, generator=generator, dtype=torch.float64)
    return 0.1 * torch.randn(D, generator=generator, dtype=torch.float64), root @ root.T + 0.01 * torch.eye(D)


def teacher_scheduler(**config) -> SimpleDDPMScheduler:
    """T = 1000, linear betas, epsilon, no clipping: the DDIM map of the exact denoiser is then linear in z."""
    return SimpleDDPMScheduler(clip_sample=False, timestep_spacing="trailing", **config)


class PerImageX0:
    """x_hat(z, t) of the exact Gaussian denoiser with a timestep per image, as `teacher_target` calls a teacher."""

    def __init__(self, denoiser: GaussianDenoiser):
        self.denoiser = denoiser

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat, out = z.double().flatten(1), torch.empty(len(z), D, dtype=torch.float64)
        for step in t.unique().tolist():
            rows = t == step
            out[rows] = self.denoiser.posterior_mean(flat[rows], step)
        return out.view_as(z).to(z.dtype)


def ddim_two_steps_float64(scheduler: SimpleDDPMScheduler, denoiser, z: torch.Tensor, steps: list[int]):
    """The scheduler's own DDIM step (eta = 0) on the chain `steps`, float64, one timestep at a time."""
    chain = SimpleDDPMScheduler.from_config(scheduler.config)
    chain.set_timesteps(timesteps=steps)
    for t in steps[:2]:
        z = chain.step(denoiser(z, torch.tensor(t)).sample, t, z, eta=0).prev_sample
    return z


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_two_step_target_is_the_one_ddim_step_that_lands_where_two_teacher_steps_land(position):
    scheduler = teacher_scheduler()
    mean, cov = gaussian_data()
    denoiser = GaussianDenoiser(mean, cov, SHAPE, scheduler.alphas_cumprod)
    chain = trailing_timesteps(8, 1000)
    i = {"first": 0, "middle": 1, "last": 3}[position]
    t, t1, t2 = (chain + [DATA])[2 * i : 2 * i + 3]
    z = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # Independent: the scheduler's DDIM step twice; the chain ends at the data after its last step.
    tail = [t, t1] + ([t2] if t2 != DATA else [])
    expected_z2 = ddim_two_steps_float64(scheduler, denoiser, z, tail)

    steps = round_steps(chain, torch.full((5,), i))
    assert steps[0].tolist() == [t, t1, t2]
    target = teacher_target(PerImageX0(denoiser), scheduler, z, steps)
    # One DDIM step of the x-prediction x~ from t to t'' (the scheduler's, prediction_type "sample") lands on z''.
    one_step = SimpleDDPMScheduler.from_config(scheduler.config, prediction_type="sample")
    one_step.set_timesteps(timesteps=[t] + ([t2] if t2 != DATA else []))
    landed = one_step.step(target, t, z, eta=0).prev_sample
    torch.testing.assert_close(landed, expected_z2, rtol=1e-9, atol=1e-9)
    if t2 == DATA:  # the last step's target is the teacher's final image itself
        torch.testing.assert_close(target, expected_z2, rtol=1e-9, atol=1e-9)


class AffineConditionalNetwork(torch.nn.Module):
    """out(z, t, y) = (0.1 + 0.2 y) z + 1e-4 t: a class-conditional stand-in whose guided output is known by hand."""

    def forward(self, z: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> SimpleNamespace:
        labels = torch.zeros(len(z)) if class_labels is None else class_labels
        slope = (0.1 + 0.2 * labels.double()).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=slope * z + 1e-4 * torch.as_tensor(t).double().view(-1, 1, 1, 1))


def test_a_guided_teacher_predicts_from_the_guided_output_and_its_two_steps_are_the_schedulers_ddim():
    """Meng et al.'s target: x_hat of (1 + w) out(z, y) - w out(z, no label), written out here in float64; its two
    DDIM steps are the scheduler's own (eta = 0) on the guided output; a dropped label stays unguided."""
    scheduler, network, w, null = teacher_scheduler(), AffineConditionalNetwork(), 2.0, 3
    z = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels, t = torch.tensor([0, 1, 2, null]), torch.full((4,), 700)
    guided = teacher_x0(network, scheduler, clip=False, guidance_scale=w, null_label=null)

    def guided_eps(z, t):
        return (1 + w) * network(z, t, labels).sample - w * network(z, t, torch.full_like(labels, null)).sample

    alpha_bar = scheduler.alphas_cumprod[700].double()
    expected = (z - (1 - alpha_bar).sqrt() * guided_eps(z, t)) / alpha_bar.sqrt()
    torch.testing.assert_close(guided(z, t, class_labels=labels), expected, rtol=1e-12, atol=1e-12)
    unguided = teacher_x0(network, scheduler, clip=False)(z, t, class_labels=labels)
    torch.testing.assert_close(guided(z, t, class_labels=labels)[3], unguided[3], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(guided(z, t, class_labels=labels)[:3], unguided[:3])

    expected_z2 = ddim_two_steps_float64(
        scheduler, lambda z, t: SimpleNamespace(sample=guided_eps(z, t)), z, [700, 500, 300]
    )
    target = teacher_target(guided, scheduler, z, torch.tensor([[700, 500, 300]] * 4), class_labels=labels)
    one_step = SimpleDDPMScheduler.from_config(scheduler.config, prediction_type="sample")
    one_step.set_timesteps(timesteps=[700, 300])
    torch.testing.assert_close(one_step.step(target, 700, z, eta=0).prev_sample, expected_z2, rtol=1e-9, atol=1e-9)


def test_a_guided_teacher_needs_its_no_label_token_and_the_labels():
    scheduler, network = teacher_scheduler(), AffineConditionalNetwork()
    with pytest.raises(ValueError, match="no-label token"):
        teacher_x0(network, scheduler, clip=False, guidance_scale=1.0)
    with pytest.raises(ValueError, match="needs the images' class_labels"):
        teacher_x0(network, scheduler, clip=False, guidance_scale=1.0, null_label=3)(
            torch.zeros(1, *SHAPE), torch.tensor([5])
        )


def affine_two_step_map(scheduler, denoiser, t: int, t1: int, t2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x~ = A z_t + b for the exact Gaussian teacher, composed from the matrices of each linear piece in float64:
    x_hat(z, t) = m + G_t (z - a_t m), DDIM z_s = a_s x_hat + (s_s / s_t)(z - a_t x_hat)."""

    def coefficients(step):
        alpha_bar = 1.0 if step == DATA else scheduler.alphas_cumprod[step].item()
        return math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)

    eye, m = torch.eye(D, dtype=torch.float64), denoiser.mean

    def x_hat_map(step):  # x_hat = G z + g
        a = math.sqrt(scheduler.alphas_cumprod[step].item())
        G = a * denoiser.cov @ torch.linalg.inv(a * a * denoiser.cov + (1 - a * a) * eye)
        return G, m - a * G @ m

    def ddim_map(step, to):  # z_s = P z + p
        (a_t, s_t), (a_s, s_s) = coefficients(step), coefficients(to)
        G, g = x_hat_map(step)
        P = (a_s - s_s / s_t * a_t) * G + (s_s / s_t) * eye
        return P, (a_s - s_s / s_t * a_t) * g

    P1, p1 = ddim_map(t, t1)
    P2, p2 = ddim_map(t1, t2)
    P, p = P2 @ P1, P2 @ p1 + p2  # z'' = P z_t + p
    (a_t, s_t), (a_2, s_2) = coefficients(t), coefficients(t2)
    denominator = a_2 - s_2 / s_t * a_t
    return (P - s_2 / s_t * eye) / denominator, p / denominator


class AffineStudent(torch.nn.Module):
    """A student that predicts x_hat = A_t z + b_t ("sample" prediction), one affine map per timestep."""

    def __init__(self, maps: dict[int, tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.timesteps = sorted(maps)
        self.A = torch.nn.Parameter(torch.stack([maps[t][0] for t in self.timesteps]))
        self.b = torch.nn.Parameter(torch.stack([maps[t][1] for t in self.timesteps]))
        self.config = SimpleNamespace(sample_size=SHAPE[1:], in_channels=SHAPE[0], out_channels=SHAPE[0])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        t = torch.as_tensor(t).reshape(-1).expand(len(z))
        index = torch.tensor([self.timesteps.index(step) for step in t.tolist()])
        x = torch.einsum("bij,bj->bi", self.A[index].to(z.dtype), z.flatten(1)) + self.b[index].to(z.dtype)
        return SimpleNamespace(sample=x.view_as(z))


def test_the_ideal_affine_student_has_zero_loss_while_the_one_step_teacher_does_not():
    scheduler = teacher_scheduler()
    student_scheduler = SimpleDDPMScheduler.from_config(scheduler.config, prediction_type="sample")
    mean, cov = gaussian_data()
    denoiser = GaussianDenoiser(mean, cov, SHAPE, scheduler.alphas_cumprod)
    chain = trailing_timesteps(8, 1000)
    padded = chain + [DATA]
    ideal = {padded[2 * i]: affine_two_step_map(scheduler, denoiser, *padded[2 * i : 2 * i + 3]) for i in range(4)}

    def teacher_one_step(step):  # the teacher's own x_hat: what the student is before training
        a = math.sqrt(scheduler.alphas_cumprod[step].item())
        G = a * cov @ torch.linalg.inv(a * a * cov + (1 - a * a) * torch.eye(D, dtype=torch.float64))
        return G, mean - a * G @ mean

    x0 = (
        mean
        + torch.randn(512, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        @ torch.linalg.cholesky(cov).T
    )
    x0 = x0.view(-1, *SHAPE)
    teacher = PerImageX0(denoiser)
    torch.manual_seed(3)
    ideal_loss = distillation_loss(AffineStudent(ideal), teacher, student_scheduler, chain, x0, None)
    torch.manual_seed(3)
    before = {t: teacher_one_step(t) for t in ideal}
    teacher_loss = distillation_loss(AffineStudent(before), teacher, student_scheduler, chain, x0, None)
    assert ideal_loss.item() < 1e-20
    assert teacher_loss.item() > 1e-6


def test_a_tiny_student_approaches_the_teachers_2n_step_ddim_samples_from_the_same_noise():
    """One round, 8 -> 4 steps: the affine student, started from the teacher's own one-step maps, is trained with
    `distillation_loss`; its 4-step samples from the pipeline approach the teacher's 8-step DDIM samples from the
    same x_T as the updates go on."""
    scheduler = teacher_scheduler()
    mean, cov = gaussian_data()
    denoiser = GaussianDenoiser(mean, cov, SHAPE, scheduler.alphas_cumprod)
    chain = trailing_timesteps(8, 1000)
    student_chain = halved_chain(chain)

    def one_step(step):
        a = math.sqrt(scheduler.alphas_cumprod[step].item())
        G = a * cov @ torch.linalg.inv(a * a * cov + (1 - a * a) * torch.eye(D, dtype=torch.float64))
        return G.float(), (mean - a * G @ mean).float()

    student = AffineStudent({t: one_step(t) for t in student_chain})
    distilled = SimpleDDPMScheduler.from_config(
        scheduler.config, prediction_type="sample", distilled_timesteps=student_chain
    )
    student_pipe = SimpleDDPMPipeline(unet=student, scheduler=distilled)
    teacher_pipe = SimpleDDPMPipeline(unet=denoiser, scheduler=SimpleDDPMScheduler.from_config(scheduler.config))
    for pipe in (student_pipe, teacher_pipe):
        pipe.set_progress_bar_config(disable=True)
    reference = teacher_pipe(
        batch_size=256, generator=torch.Generator().manual_seed(5), num_inference_steps=8, eta=0, output_type="pt"
    ).images

    def paired_error() -> float:
        with torch.no_grad():
            images = student_pipe(batch_size=256, generator=torch.Generator().manual_seed(5), output_type="pt").images
        return paired_distance(images, reference)

    chol = torch.linalg.cholesky(cov).float()
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    torch.manual_seed(0)
    errors = [paired_error()]
    for update in range(1, 301):
        x0 = (mean.float() + torch.randn(128, D) @ chol.T).view(-1, *SHAPE)
        loss = distillation_loss(student, PerImageX0(denoiser), distilled, chain, x0, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if update % 100 == 0:
            errors.append(paired_error())
    assert errors[1] < errors[0] and errors[-1] < errors[1], errors
    assert errors[-1] < 0.3 * errors[0], errors


def test_trailing_chains_of_powers_of_two_halve_into_every_other_step():
    for n in (2, 4, 8, 16, 32, 64, 128, 256, 512):
        assert trailing_timesteps(n // 2, 1000) == trailing_timesteps(n, 1000)[0::2]
    chains = distillation_chains(64, 4, 1000)
    assert [len(chain) for chain in chains] == [64, 32, 16, 8, 4]
    for teacher, student in zip(chains, chains[1:], strict=False):
        assert student == teacher[0::2] and student[0] == 999
    assert chains[-1] == trailing_timesteps(4, 1000) == [999, 749, 499, 249]


@pytest.mark.parametrize(("teacher_steps", "steps"), [(64, 3), (64, 64), (48, 16), (64, 128)])
def test_a_step_count_that_is_not_the_chain_halved_is_refused_in_one_line(teacher_steps, steps):
    with pytest.raises(ValueError, match=f"--num_inference_steps {steps} must be the teacher's {teacher_steps} steps"):
        distillation_chains(teacher_steps, steps, 1000)


@pytest.mark.parametrize("chain", [[5, 5, 1], [1, 5], [1000, 3], [4, -1], [2.5, 1.0]])
def test_the_scheduler_refuses_a_distilled_chain_that_is_not_decreasing_within_the_timesteps(chain):
    with pytest.raises(ValueError, match="distilled_timesteps must"):
        SimpleDDPMScheduler(distilled_timesteps=chain)


class Recorder(torch.nn.Module):
    """Wraps a network and records the x_t and t of every call."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.config, self.calls = unet, unet.config, []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, sample, timestep, **kwargs):
        self.calls.append((sample.clone(), int(timestep)))
        return self.unet(sample, timestep, **kwargs)


def test_a_distilled_pipeline_samples_its_chain_deterministically_from_the_teachers_x_T():
    scheduler = teacher_scheduler()
    mean, cov = gaussian_data()
    denoiser = GaussianDenoiser(mean, cov, SHAPE, scheduler.alphas_cumprod)
    chain = trailing_timesteps(4, 1000)
    student = Recorder(denoiser)
    teacher = Recorder(denoiser)
    distilled = SimpleDDPMScheduler.from_config(scheduler.config, distilled_timesteps=chain)
    student_pipe = SimpleDDPMPipeline(unet=student, scheduler=distilled)
    teacher_pipe = SimpleDDPMPipeline(unet=teacher, scheduler=SimpleDDPMScheduler.from_config(scheduler.config))
    first = student_pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="pt").images
    again = student_pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="pt").images
    teacher_pipe(batch_size=3, generator=torch.Generator().manual_seed(7), num_inference_steps=2, output_type="pt")
    assert [t for _, t in student.calls[:4]] == chain
    torch.testing.assert_close(student.calls[0][0], teacher.calls[0][0], rtol=0, atol=0)  # the same x_T
    assert torch.equal(first, again)  # eta = 0: no noise after x_T
    # The same 4-step DDIM computed by the scheduler with eta = 0 explicitly.
    explicit = SimpleDDPMPipeline(unet=denoiser, scheduler=SimpleDDPMScheduler.from_config(scheduler.config))
    explicit.set_progress_bar_config(disable=True)
    expected = explicit(
        batch_size=3, generator=torch.Generator().manual_seed(7), num_inference_steps=4, eta=0, output_type="pt"
    ).images
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="This is a 4-step distilled model; it samples its own 4 timesteps only"):
        student_pipe(num_inference_steps=8)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_a_one_step_chain_can_be_set_with_every_spacing(spacing):
    """One step is a student's last round; numpy keeps a 1-element reversed view's negative stride, which torch
    refuses, unless the chain is copied."""
    scheduler = SimpleDDPMScheduler(timestep_spacing=spacing)
    scheduler.set_timesteps(1)
    assert len(scheduler.timesteps) == 1 and 0 <= scheduler.timesteps[0] < 1000
