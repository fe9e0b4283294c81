"""Model-free continuous-time learning from sampled transitions (book: chapter "Continuous-time q-learning").

The learner sees only transitions (x, a, r, x') of step dt from an environment (:mod:`hjbcourse.environment`);
it never calls a drift, a diffusion or a generator. Two methods share the machinery (replay buffer, behaviour
noise schedule, presets, seed, device, the run loop of :mod:`hjbcourse.solvers.base`):

``method="td_actor_critic"``  the simple actor-critic of the course's text: a critic Q_psi(x, a) fitted to
    y = r dt + e^{-rho dt} Qbar(x', a_omega(x')) with a slowly updated target copy Qbar, and an actor
    a_omega(x) that climbs Q_psi(x, a_omega(x)). Since Q_dt(x, a) = V(x) + dt q(x, a) + o(dt), the part of the
    critic that the actor needs shrinks like dt and drowns in the critic's error as dt -> 0.

``method="q_learning"``  Jia & Zhou's q-learning (JMLR 2023) with entropy regularisation of temperature
    gamma (``temperature``): a value J_theta(x) and a q-function q_psi(x, a), the rate of advantage
    q(x, a) = r(x, a) + L^a J(x) - rho J(x). The q-function is parametrised in the normalised Gibbs form
        q_psi(x, a) = -1/2 (a - m(x))' Lam (a - m(x)) + gamma/2 log det(Lam / (2 pi gamma)),
    so that int exp(q / gamma) da = 1 holds exactly and the Gibbs policy pi(a|x) ~ exp(q / gamma) is the
    Gaussian N(m(x), gamma Lam^{-1}); ``policy(x)`` returns its mean m(x). Both are trained with the TD(0)
    form of the martingale condition,
        delta = e^{-rho dt} J(x') - J(x) + (r - q_psi(x, a)) dt,
    moving theta along delta grad J(x) (J(x') held fixed) and psi along delta grad q(x, a); every term of
    delta / dt is O(1), so the conditions stay well posed as dt -> 0. The conditions hold for any behaviour
    policy, so exploration noise and replayed transitions are allowed.

Parametrisations (``value`` and ``mean``): ``"mlp"`` (:class:`hjbcourse.MLP`), ``"quadratic"``
(J quadratic in x; for the actor-critic, Q quadratic in (x, a)), ``"power"`` (J = c x^e / e with the
exponent e = ``power_exponent`` given by the user; for the actor-critic Q = c0 + x^e (quadratic in a)),
``"linear"`` and ``"constant"`` means. The precision Lam is a constant positive diagonal matrix, a constant
full one (the default with a network mean) or a function of x (``precision``), times x^e for the power
family, whose q scales like its J. The Gaussian acts in coordinates u mapped into the action
box (``squash``); ``q`` and ``m`` are functions of u.

Data-driven scales (no model): the first batch of transitions sets |r| / rho, the scale of the value's level,
and its mean r / rho the level's start; a network J carries its variation over the states in units of its own
spread, kept up to date as it learns (:class:`.parametrisations.NormalisedValue`). With networks the solution
is the average of the parameters over the last quarter of the updates, and a run ends with a test of the
martingale conditions on test functions the training did not use (:meth:`QLearning.consistency`), which warns
(:class:`QLearningWarning`) where the transitions ask for another policy mean.

Modules: :mod:`.config` (the settings), :mod:`.parametrisations` (the families above, the Gibbs q, the action
map), :mod:`.replay` (the replay buffer), :mod:`.solver` (the solver and its solution), :mod:`.held_action`
(the best gain of an LQR when actions are held for dt, the reference of the chapter).
"""

from .config import QLearningConfig
from .held_action import held_action_lqr_gain
from .replay import ReplayBuffer
from .solver import QLearning, QLearningSolution, QLearningWarning

__all__ = ["QLearningConfig", "QLearning", "QLearningSolution", "QLearningWarning", "ReplayBuffer",
           "held_action_lqr_gain"]
