"""Native WebShop text environment (Yao et al. 2022) without a browser: catalog loading in the original
file schema, BM25 product search, upstream's pages/actions and reward function, a scripted oracle.
Submodules import lazily so `dreamgym.envs.webshop.reward` can be used on its own."""

__all__ = ["WebShopEnv"]


def __getattr__(name: str):
    if name == "WebShopEnv":
        from dreamgym.envs.webshop.env import WebShopEnv

        return WebShopEnv
    raise AttributeError(name)
