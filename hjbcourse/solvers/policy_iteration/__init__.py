"""Model-based neural policy iteration for discounted HJB equations (book: chapter "Policy iteration").

    rho V(x) = max_a { r(x, a) + L^a V(x) },   L^a V = grad V . f(x, a) + 1/2 Tr(S S^T(x, a) Hess V).

A value network V_theta and a policy network alpha_phi (or the closed-form greedy policy) alternate:

*Evaluation (Feynman–Kac).* From each training state x, simulate the closed loop dX = f(X, alpha(X)) dt +
S dW over a horizon T and form the bootstrapped target

    y(x) = int_0^T e^{-rho t} r(X_t, alpha(X_t)) dt + e^{-rho T} V_old(X_T)  -  CV,

whose mean is the value of alpha when V_old is (book: eq. (ch04-fk)). ``CV`` is a control variate with mean
exactly zero (book: eq. (ch04-cv)): the first- and second-order terms of Ito's expansion of
e^{-rho t} V_old(X_t) (with Milstein's term for multiplicative noise), their derivatives taken by central
differences; it removes most of the noise of y once V_old is close. Paths come in antithetic pairs (dW and
-dW). V_theta is then fitted to the targets by least squares, warm-started from V_old (optionally by relative
error, weights 1 / V_old(x)^2, and for a value of known sign as V = sign * exp(N(x)): ``value_fit``,
``value_sign``). An error in V_old
enters the new target multiplied by e^{-rho T}, so repeated evaluations contract it at that rate; the first
evaluation starts from V_0 = 0 with the longer horizon ``initial_horizon``. A quarter of the training states
(``replay_fraction``) are end points of the previous paths, because the bootstrap reads V_old there.
For a positive state that moves geometrically (wealth), ``input_scaling="log"`` lets the networks read
log x, and ``state_box`` bounds the region they are trained on and read in: end points are clamped into the
domain enlarged ``state_box`` times (in the networks' input coordinates), the policy is constant beyond it
and the value continues linearly along its slope at the box's face (:class:`MappedInputMLP`).

*Improvement.* gradient ascent on Q(x, a) = (r(x, a) + L^a V_theta(x)) / rho in the policy parameters, with
grad V and Hess V computed once from the new value network and detached (only the policy moves). Or, with
``policy="greedy"``, no policy network: a*(x) = argmax_a {r + grad V . f} in closed form, which is one Newton
step from a = 0 on the Hamiltonian, exact when f = f0 + G a, r = r0 + r1'a - 1/2 a'Ra and S does not depend
on a (checked on sampled states when the solver starts).

The modules: :mod:`.config` (:class:`PolicyIterationConfig`), :mod:`.networks` (the value and policy networks,
:class:`GreedyPolicy`, the training and evaluation states), :mod:`.evaluation` (:func:`rollout_targets`, the
control variate, :func:`fit_value`, :func:`relative_weights`), :mod:`.improvement` (:func:`improve_policy`)
and :mod:`.solver` (:class:`PolicyIteration`, :class:`PolicyIterationSolution`). The pieces are reused by
the q-learning solver and the chapters; the closed-loop simulation of a policy is
:func:`hjbcourse.sde.discounted_reward_of_policy`, and the chapters' problems and settings are in
:mod:`hjbcourse.course`.
"""
from ...sde import discounted_reward_of_policy  # noqa: F401  (its old home; documented in hjbcourse.sde)
from .config import PolicyIterationConfig
from .evaluation import fit_value, relative_weights, rollout_targets
from .improvement import greedy_objective, improve_policy
from .networks import (GreedyPolicy, MappedInputMLP, PolicyNetwork, SignedExpValue, clamp_to_box,
                       evaluation_states, make_policy_network, make_value_network, set_constant_action,
                       training_states)
from .solver import PolicyIteration, PolicyIterationSolution, PolicyIterationWarning

__all__ = [
    "PolicyIterationConfig",
    "PolicyIteration",
    "PolicyIterationSolution",
    "PolicyIterationWarning",
    "PolicyNetwork",
    "MappedInputMLP",
    "SignedExpValue",
    "GreedyPolicy",
    "make_value_network",
    "make_policy_network",
    "set_constant_action",
    "training_states",
    "clamp_to_box",
    "evaluation_states",
    "rollout_targets",
    "fit_value",
    "relative_weights",
    "improve_policy",
    "greedy_objective",
]
