"""Tiny settings shared by the tests: purifier networks, their purification and training budgets."""

TINY_RECIPES = {
    "ddpm": {"widths": [8, 16]},
    "ebm": {"widths": [8, 16]},
    "cold": {"widths": [8, 16], "levels": 4},
    "mae": {"embed_dim": 16, "depth": 1, "decoder_dim": 16, "decoder_depth": 1, "num_heads": 2},
}
TINY_PARAMS = {"ddpm": {"steps": 3}, "ebm": {"max_steps": 2, "ensemble": 2}}
TINY_PURIFICATION = {"ebm": {"ensemble": 2, "max_steps": 2}, "ddpm": {"steps": 2}}
TINY_EPOCHS = {"mae": {"pretrain_epochs": 1, "finetune_epochs": 1, "attack_steps": 1}}
