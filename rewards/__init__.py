"""Reward functions (TRL calling convention) and the behaviour oracle they query."""
from rewards.oracle import HFOracle, Oracle
from rewards.registry import REWARDS, RewardConfig, build_reward_funcs

__all__ = ["HFOracle", "Oracle", "REWARDS", "RewardConfig", "build_reward_funcs"]
