"""Build the quickstart's tiny Qwen2 (1.1M parameters) and character tokenizer into a HF directory."""
import argparse

from areal_mega.models.tiny import build_char_tokenizer, build_tiny_model

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("out")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
tokenizer = build_char_tokenizer(args.out)
build_tiny_model(args.out, arch="qwen2", vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512,
                 num_layers=4, num_heads=4, num_kv_heads=4, tie_word_embeddings=True, seed=args.seed)
print(f"wrote {args.out}")
