"""tumorcls's Hydra sweeper plugins. Hydra only instantiates plugins found in the ``hydra_plugins`` namespace
package, so the plugin class lives here; what it does lives in tumorcls (tumorcls.training.sweep_resume)."""
