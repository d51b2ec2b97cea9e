"""Derives the demo's third model: a GGUF's Q4_1 tensors requantized to Q4_0, everything else
copied as it is (metadata, tokenizer, tensors of other types). Needs the `gguf` package (and
numpy), from PyPI; about ten seconds for SmolLM2 135M. Usage: requantize.py SRC DST."""

import sys

import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

src, dst = sys.argv[1], sys.argv[2]
reader = gguf.GGUFReader(src)
arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
for field in reader.fields.values():
    # The writer adds the architecture and the GGUF.* header fields itself.
    if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
        continue
    kind = field.types[0]
    value = field.contents()
    if field.name == gguf.Keys.General.FILE_TYPE:
        value = gguf.LlamaFileType.MOSTLY_Q4_0
    writer.add_key_value(field.name, value, kind, sub_type=field.types[-1] if kind == V.ARRAY else None)
tensors = []
for tensor in reader.tensors:
    data, kind = tensor.data, tensor.tensor_type
    if kind == Q.Q4_1:
        data, kind = gguf.quants.quantize(gguf.quants.dequantize(data, kind), Q.Q4_0), Q.Q4_0
    tensors.append(data)
    writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, kind)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_ti_data_to_file()
for data in tensors:
    writer.write_tensor_data(data, tensor_endianess=reader.endianess)
writer.close()
