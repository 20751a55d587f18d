"""Evaluators: frame-level fidelity metrics (PSNR, SSIM, LPIPS), video I/O and a VBench runner."""
