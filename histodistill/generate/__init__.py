"""Stages 2-3, the generator (notebooks 02-03): the autoencoder and U-ViT denoiser
(`autoencoder`, `uvit`), their training (`diffusion`), the diffusers pipeline (`pipeline`),
sampling the synthetic pool (`sampling`), choosing the sampler on val (`guidance`), judging the
pool (`quality`), several processes (`scale_out`), the generator shipped for the demo
(`shipped`), each cached stage (`stages`) and the figures (`figures`)."""
