"""Hand-written fakes of carriers' status APIs, served over real HTTP on loopback."""
