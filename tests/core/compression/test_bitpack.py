import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qtradeoff.core.compression.bitpack import pack_bits, packed_bytes, unpack_bits


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(1, 16), data=st.data())
def test_pack_unpack_round_trip_every_width(bits, data):
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=0, max_size=300))
    codes = torch.tensor(values, dtype=torch.int64)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_bytes(len(values), bits)
    assert torch.equal(unpack_bits(packed, bits, len(values)), codes)


def test_pack_refuses_codes_outside_the_width():
    with pytest.raises(ValueError, match="codes must lie"):
        pack_bits(torch.tensor([4]), 2)
    with pytest.raises(ValueError, match="fewer than"):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), 4, 3)


def test_bit_order_is_little_endian_and_dense():
    # 3-bit codes 1, 2, 7 -> bits 100 010 111 (value by value, low bit first) -> bytes 0b11010001, 0b00000001
    assert pack_bits(torch.tensor([1, 2, 7]), 3).tolist() == [0b11010001, 0b1]
