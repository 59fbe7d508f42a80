"""The engine of qtradeoff: loading, compression, measurement and exploration. No Qt imports here."""
