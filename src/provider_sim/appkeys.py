"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from provider_sim.settings import SimSettings
from provider_sim.simulator import Simulator

SETTINGS = web.AppKey("settings", SimSettings)
SIMULATOR = web.AppKey("simulator", Simulator)
