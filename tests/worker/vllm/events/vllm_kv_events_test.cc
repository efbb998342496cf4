#include "worker/vllm/events/vllm_kv_events.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <msgpack.hpp>
#include <random>
#include <string>
#include <vector>

// Payloads are packed here as the protocol reference describes vLLM's
// msgspec output: the batch {ts, events, data_parallel_rank} and its events,
// either as maps tagged "type" (current releases, defaults omitted) or as
// positional arrays with the tag first (older releases).
namespace tern::worker::vllm {
namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

std::string Bytes(const msgpack::sbuffer& buffer) { return {buffer.data(), buffer.size()}; }

void PackStr(Packer& p, std::string_view s) {
  p.pack_str(static_cast<uint32_t>(s.size()));
  p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

void PackBin(Packer& p, std::string_view s) {
  p.pack_bin(static_cast<uint32_t>(s.size()));
  p.pack_bin_body(s.data(), static_cast<uint32_t>(s.size()));
}

void PackInts(Packer& p, const std::vector<int64_t>& values) {
  p.pack_array(static_cast<uint32_t>(values.size()));
  for (int64_t v : values) p.pack(v);
}

// A batch of one event packed by `pack_event`, as a map or as an array.
template <typename F>
std::string OneEventBatch(bool as_map, F pack_event) {
  msgpack::sbuffer buffer;
  Packer p(buffer);
  if (as_map) {
    p.pack_map(2);
    PackStr(p, "ts");
    p.pack(1.0);
    PackStr(p, "events");
  } else {
    p.pack_array(2);
    p.pack(1.0);
  }
  p.pack_array(1);
  pack_event(p);
  return Bytes(buffer);
}

VllmEvent DecodeOne(const std::string& payload) {
  absl::StatusOr<VllmEventBatch> batch = DecodeVllmEventBatch(payload);
  EXPECT_TRUE(batch.ok()) << batch.status();
  if (!batch.ok() || batch->events.size() != 1) {
    ADD_FAILURE() << "expected one event";
    return {};
  }
  return batch->events[0];
}

TEST(VllmKvEventsTest, DecodesTheMapEncodingOfCurrentReleases) {
  msgpack::sbuffer buffer;
  Packer p(buffer);
  p.pack_map(3);
  PackStr(p, "ts");
  p.pack(1723.25);
  PackStr(p, "events");
  p.pack_array(3);
  // BlockStored with the fields vLLM always writes (no defaults to omit).
  p.pack_map(8);
  PackStr(p, "type");
  PackStr(p, "BlockStored");
  PackStr(p, "block_hashes");
  PackInts(p, {11, -12});
  PackStr(p, "parent_block_hash");
  p.pack_nil();
  PackStr(p, "token_ids");
  PackInts(p, {1, 2, 3, 4, 5, 6, 7, 8});
  PackStr(p, "block_size");
  p.pack(4);
  PackStr(p, "lora_id");
  p.pack_nil();
  PackStr(p, "medium");
  PackStr(p, "GPU");
  PackStr(p, "lora_name");
  p.pack_nil();
  p.pack_map(3);
  PackStr(p, "type");
  PackStr(p, "BlockRemoved");
  PackStr(p, "block_hashes");
  PackInts(p, {11});
  PackStr(p, "medium");
  PackStr(p, "CPU");
  p.pack_map(1);
  PackStr(p, "type");
  PackStr(p, "AllBlocksCleared");
  PackStr(p, "data_parallel_rank");
  p.pack(2);

  absl::StatusOr<VllmEventBatch> batch = DecodeVllmEventBatch(Bytes(buffer));
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->ts, 1723.25);
  EXPECT_EQ(batch->data_parallel_rank, std::optional<int32_t>(2));
  ASSERT_EQ(batch->events.size(), 3u);

  const VllmEvent& stored = batch->events[0];
  EXPECT_EQ(stored.kind, VllmEventKind::kBlockStored);
  EXPECT_EQ(stored.tag, "BlockStored");
  EXPECT_EQ(stored.block_hashes,
            (std::vector<VllmBlockId>{VllmBlockIdFromInt(11), VllmBlockIdFromInt(-12)}));
  EXPECT_FALSE(stored.parent_block_hash.has_value());
  EXPECT_EQ(stored.token_ids, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(stored.block_size, 4);
  EXPECT_FALSE(stored.lora_id.has_value());
  EXPECT_EQ(stored.medium, "GPU");
  EXPECT_FALSE(stored.lora_name.has_value());
  EXPECT_FALSE(stored.has_extra_keys);
  EXPECT_EQ(stored.group_idx, 0);

  const VllmEvent& removed = batch->events[1];
  EXPECT_EQ(removed.kind, VllmEventKind::kBlockRemoved);
  EXPECT_EQ(removed.block_hashes, (std::vector<VllmBlockId>{VllmBlockIdFromInt(11)}));
  EXPECT_EQ(removed.medium, "CPU");

  EXPECT_EQ(batch->events[2].kind, VllmEventKind::kAllBlocksCleared);
}

TEST(VllmKvEventsTest, DecodesThePositionalEncodingOfOlderReleases) {
  msgpack::sbuffer buffer;
  Packer p(buffer);
  p.pack_array(2);  // [ts, events]: releases before data_parallel_rank
  p.pack(5.5);
  p.pack_array(3);
  p.pack_array(6);
  PackStr(p, "BlockStored");
  PackInts(p, {21});
  p.pack(20);
  PackInts(p, {9, 8});
  p.pack(2);
  p.pack_nil();
  p.pack_array(2);
  PackStr(p, "BlockRemoved");
  PackInts(p, {20, 21});
  p.pack_array(1);
  PackStr(p, "AllBlocksCleared");

  absl::StatusOr<VllmEventBatch> batch = DecodeVllmEventBatch(Bytes(buffer));
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->ts, 5.5);
  EXPECT_FALSE(batch->data_parallel_rank.has_value());
  ASSERT_EQ(batch->events.size(), 3u);
  const VllmEvent& stored = batch->events[0];
  EXPECT_EQ(stored.kind, VllmEventKind::kBlockStored);
  EXPECT_EQ(stored.block_hashes, (std::vector<VllmBlockId>{VllmBlockIdFromInt(21)}));
  EXPECT_EQ(stored.parent_block_hash, std::optional<VllmBlockId>(VllmBlockIdFromInt(20)));
  EXPECT_EQ(stored.token_ids, (std::vector<int32_t>{9, 8}));
  EXPECT_EQ(stored.block_size, 2);
  EXPECT_EQ(stored.medium, "GPU");  // not sent: vLLM's default
  EXPECT_EQ(batch->events[1].kind, VllmEventKind::kBlockRemoved);
  EXPECT_EQ(batch->events[1].block_hashes,
            (std::vector<VllmBlockId>{VllmBlockIdFromInt(20), VllmBlockIdFromInt(21)}));
  EXPECT_EQ(batch->events[2].kind, VllmEventKind::kAllBlocksCleared);
}

TEST(VllmKvEventsTest, PositionalBatchCarriesTheDataParallelRank) {
  msgpack::sbuffer buffer;
  Packer p(buffer);
  p.pack_array(3);
  p.pack(7);  // an integral ts is still a time
  p.pack_array(0);
  p.pack(3);
  absl::StatusOr<VllmEventBatch> batch = DecodeVllmEventBatch(Bytes(buffer));
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->ts, 7.0);
  EXPECT_TRUE(batch->events.empty());
  EXPECT_EQ(batch->data_parallel_rank, std::optional<int32_t>(3));
}

TEST(VllmKvEventsTest, ReadsEveryBlockStoredFieldInBothEncodings) {
  auto pack_fields = [](Packer& p) {
    PackInts(p, {1, 2});
    p.pack(0);
    PackInts(p, {1, 2, 3, 4});
    p.pack(2);
    p.pack(7);
    PackStr(p, "CPU");
    PackStr(p, "adapter");
    p.pack_array(2);
    p.pack_nil();
    p.pack_array(2);  // a multimodal id and its offset
    PackStr(p, "mm-hash");
    p.pack(3);
    p.pack(1);
  };
  const char* names[] = {"block_hashes", "parent_block_hash", "token_ids",  "block_size", "lora_id",
                         "medium",       "lora_name",         "extra_keys", "group_idx"};
  const std::string as_array = OneEventBatch(false, [&](Packer& p) {
    p.pack_array(10);
    PackStr(p, "BlockStored");
    pack_fields(p);
  });
  // The same values as a map, keys in reverse to show order does not matter.
  const std::string as_map = OneEventBatch(true, [&](Packer& p) {
    p.pack_map(10);
    PackStr(p, "type");
    PackStr(p, "BlockStored");
    msgpack::sbuffer scratch;
    Packer s(scratch);
    pack_fields(s);
    msgpack::object_handle parsed[9];
    size_t offset = 0;
    for (int i = 0; i < 9; ++i) parsed[i] = msgpack::unpack(scratch.data(), scratch.size(), offset);
    for (int i = 8; i >= 0; --i) {
      PackStr(p, names[i]);
      p.pack(parsed[i].get());
    }
  });
  for (const std::string& payload : {as_array, as_map}) {
    const VllmEvent event = DecodeOne(payload);
    EXPECT_EQ(event.kind, VllmEventKind::kBlockStored);
    EXPECT_EQ(event.block_hashes,
              (std::vector<VllmBlockId>{VllmBlockIdFromInt(1), VllmBlockIdFromInt(2)}));
    EXPECT_EQ(event.parent_block_hash, std::optional<VllmBlockId>(VllmBlockIdFromInt(0)));
    EXPECT_EQ(event.token_ids, (std::vector<int32_t>{1, 2, 3, 4}));
    EXPECT_EQ(event.block_size, 2);
    EXPECT_EQ(event.lora_id, std::optional<int64_t>(7));
    EXPECT_EQ(event.medium, "CPU");
    EXPECT_EQ(event.lora_name, std::optional<std::string>("adapter"));
    EXPECT_TRUE(event.has_extra_keys);
    EXPECT_EQ(event.group_idx, 1);
  }
}

TEST(VllmKvEventsTest, ExtraKeysOfOnlyNilsMeanTokensAlone) {
  for (bool as_map : {false, true}) {
    const VllmEvent event = DecodeOne(OneEventBatch(as_map, [&](Packer& p) {
      if (as_map) {
        p.pack_map(3);
        PackStr(p, "type");
        PackStr(p, "BlockStored");
        PackStr(p, "block_hashes");
        PackInts(p, {1, 2});
        PackStr(p, "extra_keys");
      } else {
        p.pack_array(9);
        PackStr(p, "BlockStored");
        PackInts(p, {1, 2});
        for (int i = 0; i < 6; ++i) p.pack_nil();
      }
      p.pack_array(2);
      p.pack_nil();
      p.pack_nil();
    }));
    EXPECT_EQ(event.block_hashes.size(), 2u);
    EXPECT_FALSE(event.has_extra_keys);
  }
}

TEST(VllmKvEventsTest, MissingTrailingFieldsTakeDefaults) {
  const VllmEvent positional = DecodeOne(OneEventBatch(false, [](Packer& p) {
    p.pack_array(2);
    PackStr(p, "BlockStored");
    PackInts(p, {3});
  }));
  const VllmEvent mapped = DecodeOne(OneEventBatch(true, [](Packer& p) {
    p.pack_map(2);
    PackStr(p, "type");
    PackStr(p, "BlockStored");
    PackStr(p, "block_hashes");
    PackInts(p, {3});
  }));
  for (const VllmEvent& event : {positional, mapped}) {
    EXPECT_EQ(event.kind, VllmEventKind::kBlockStored);
    EXPECT_EQ(event.block_hashes, (std::vector<VllmBlockId>{VllmBlockIdFromInt(3)}));
    EXPECT_FALSE(event.parent_block_hash.has_value());
    EXPECT_TRUE(event.token_ids.empty());
    EXPECT_EQ(event.block_size, 0);
    EXPECT_EQ(event.medium, "GPU");
    EXPECT_FALSE(event.lora_id.has_value());
    EXPECT_FALSE(event.lora_name.has_value());
    EXPECT_FALSE(event.has_extra_keys);
    EXPECT_EQ(event.group_idx, 0);
  }
  // A batch with nothing but its time.
  msgpack::sbuffer buffer;
  Packer p(buffer);
  p.pack_array(1);
  p.pack(2.0);
  absl::StatusOr<VllmEventBatch> batch = DecodeVllmEventBatch(Bytes(buffer));
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_TRUE(batch->events.empty());
}

TEST(VllmKvEventsTest, AppendedFieldsAreIgnored) {
  const VllmEvent positional = DecodeOne(OneEventBatch(false, [](Packer& p) {
    p.pack_array(14);
    PackStr(p, "BlockRemoved");
    PackInts(p, {4});
    PackStr(p, "GPU");
    p.pack(2);
    PackStr(p, "full_attention");  // what a later release might append
    p.pack(128);
    p.pack_map(1);
    PackStr(p, "k");
    p.pack_array(0);
    for (int i = 0; i < 7; ++i) p.pack(i);
  }));
  EXPECT_EQ(positional.kind, VllmEventKind::kBlockRemoved);
  EXPECT_EQ(positional.block_hashes, (std::vector<VllmBlockId>{VllmBlockIdFromInt(4)}));
  EXPECT_EQ(positional.group_idx, 2);

  const VllmEvent mapped = DecodeOne(OneEventBatch(true, [](Packer& p) {
    p.pack_map(5);
    PackStr(p, "type");
    PackStr(p, "BlockStored");
    PackStr(p, "kv_cache_spec_kind");
    PackStr(p, "sliding_window");
    PackStr(p, "kv_cache_spec_sliding_window");
    p.pack(4096);
    p.pack(17);  // a key that is not a string
    p.pack(true);
    PackStr(p, "block_hashes");
    PackInts(p, {5});
  }));
  EXPECT_EQ(mapped.kind, VllmEventKind::kBlockStored);
  EXPECT_EQ(mapped.block_hashes, (std::vector<VllmBlockId>{VllmBlockIdFromInt(5)}));

  // The batch too: a fourth positional element, an unknown key.
  msgpack::sbuffer buffer;
  Packer p(buffer);
  p.pack_map(3);
  PackStr(p, "ts");
  p.pack(1.0);
  PackStr(p, "events");
  p.pack_array(0);
  PackStr(p, "source");
  PackStr(p, "somewhere");
  EXPECT_TRUE(DecodeVllmEventBatch(Bytes(buffer)).ok());
  msgpack::sbuffer positional_buffer;
  Packer q(positional_buffer);
  q.pack_array(4);
  q.pack(1.0);
  q.pack_array(0);
  q.pack_nil();
  PackStr(q, "more");
  EXPECT_TRUE(DecodeVllmEventBatch(Bytes(positional_buffer)).ok());
}

TEST(VllmKvEventsTest, UnknownTagsDecodeAsUnknownWithTheirTag) {
  const VllmEvent positional = DecodeOne(OneEventBatch(false, [](Packer& p) {
    p.pack_array(3);
    PackStr(p, "BlockMoved");
    p.pack(1.5);  // fields of a kind we do not know are not checked
    p.pack_nil();
  }));
  EXPECT_EQ(positional.kind, VllmEventKind::kUnknown);
  EXPECT_EQ(positional.tag, "BlockMoved");
  const VllmEvent mapped = DecodeOne(OneEventBatch(true, [](Packer& p) {
    p.pack_map(2);
    PackStr(p, "block_hashes");
    PackStr(p, "not what BlockStored has");
    PackStr(p, "type");
    PackStr(p, "CacheResized");
  }));
  EXPECT_EQ(mapped.kind, VllmEventKind::kUnknown);
  EXPECT_EQ(mapped.tag, "CacheResized");
}

TEST(VllmKvEventsTest, DigestBytesAndIntsAreDistinctOpaqueIds) {
  const std::string digest("\x01\x02\x00\xff", 4);
  const VllmEvent event = DecodeOne(OneEventBatch(true, [&](Packer& p) {
    p.pack_map(3);
    PackStr(p, "type");
    PackStr(p, "BlockStored");
    PackStr(p, "block_hashes");
    p.pack_array(3);
    PackBin(p, digest);
    PackStr(p, digest);  // a str of the same bytes is the same digest
    p.pack(uint64_t{0xfffffffffffffffe});
    PackStr(p, "parent_block_hash");
    PackBin(p, "parent");
  }));
  ASSERT_EQ(event.block_hashes.size(), 3u);
  EXPECT_EQ(event.block_hashes[0], VllmBlockIdFromBytes(digest));
  EXPECT_EQ(event.block_hashes[1], VllmBlockIdFromBytes(digest));
  // The low 64 bits of a digest above 2^63 are the bits of a negative int.
  EXPECT_EQ(event.block_hashes[2], VllmBlockIdFromInt(-2));
  EXPECT_EQ(event.parent_block_hash, std::optional<VllmBlockId>(VllmBlockIdFromBytes("parent")));

  const std::string eight_bytes("\x00\x00\x00\x00\x00\x00\x00\x05", 8);
  EXPECT_EQ(VllmBlockIdFromInt(5), std::string("i") + eight_bytes);
  EXPECT_EQ(VllmBlockIdFromBytes(eight_bytes), std::string("b") + eight_bytes);
  EXPECT_NE(VllmBlockIdFromInt(5), VllmBlockIdFromBytes(eight_bytes));
  EXPECT_EQ(VllmBlockIdFromInt(-1), std::string("i") + std::string(8, '\xff'));
}

TEST(VllmKvEventsTest, NilMediumMeansTheGpu) {
  const VllmEvent event = DecodeOne(OneEventBatch(false, [](Packer& p) {
    p.pack_array(3);
    PackStr(p, "BlockRemoved");
    PackInts(p, {1});
    p.pack_nil();
  }));
  EXPECT_EQ(event.medium, "GPU");
}

// Builds a batch whose single event is packed by `pack_event`, for the cases
// that must be refused.
std::string BadEvent(void (*pack_event)(Packer&)) { return OneEventBatch(false, pack_event); }

TEST(VllmKvEventsTest, RefusesMalformedInputWithInvalidArgument) {
  std::vector<std::pair<std::string, std::string>> cases = {
      {"empty", ""},
      {"reserved byte", "\xc1"},
      {"truncated", "\x92\xcb\x3f"},
      {"an int", "\x05"},
      {"a string",
       "\xa3"
       "abc"},
      {"trailing bytes", std::string("\x92\x01\x90\x00", 4)},
      {"array claiming 2^32-1 elements", "\xdd\xff\xff\xff\xff\x01"},
      {"map claiming 2^32-1 pairs", "\xdf\xff\xff\xff\xff\x01"},
      {"str claiming 4 GiB",
       "\xdb\xff\xff\xff\xff"
       "a"},
      {"deep nesting", std::string(100000, '\x91')},
  };
  auto add = [&](const char* name, void (*pack_event)(Packer&)) {
    cases.emplace_back(name, BadEvent(pack_event));
  };
  add("event is an int", [](Packer& p) { p.pack(1); });
  add("event array without tag", [](Packer& p) { p.pack_array(0); });
  add("tag not a string", [](Packer& p) {
    p.pack_array(1);
    p.pack(1);
  });
  add("hashes not an array", [](Packer& p) {
    p.pack_array(2);
    PackStr(p, "BlockStored");
    p.pack(1);
  });
  add("hash a float", [](Packer& p) {
    p.pack_array(2);
    PackStr(p, "BlockRemoved");
    p.pack_array(1);
    p.pack(1.5);
  });
  add("parent a map", [](Packer& p) {
    p.pack_array(3);
    PackStr(p, "BlockStored");
    p.pack_array(0);
    p.pack_map(0);
  });
  add("negative token", [](Packer& p) {
    p.pack_array(4);
    PackStr(p, "BlockStored");
    p.pack_array(0);
    p.pack_nil();
    PackInts(p, {1, -1});
  });
  add("token over int32", [](Packer& p) {
    p.pack_array(4);
    PackStr(p, "BlockStored");
    p.pack_array(0);
    p.pack_nil();
    PackInts(p, {int64_t{1} << 31});
  });
  add("token a string", [](Packer& p) {
    p.pack_array(4);
    PackStr(p, "BlockStored");
    p.pack_array(0);
    p.pack_nil();
    p.pack_array(1);
    PackStr(p, "7");
  });
  add("block size a string", [](Packer& p) {
    p.pack_array(5);
    PackStr(p, "BlockStored");
    p.pack_array(0);
    p.pack_nil();
    p.pack_array(0);
    PackStr(p, "16");
  });
  add("medium an int", [](Packer& p) {
    p.pack_array(3);
    PackStr(p, "BlockRemoved");
    p.pack_array(0);
    p.pack(1);
  });
  add("extra keys a string", [](Packer& p) {
    p.pack_array(9);
    PackStr(p, "BlockStored");
    for (int i = 0; i < 7; ++i) p.pack_nil();
    PackStr(p, "mm");
  });
  add("map event without type", [](Packer& p) {
    p.pack_map(1);
    PackStr(p, "block_hashes");
    p.pack_array(0);
  });
  {
    msgpack::sbuffer buffer;
    Packer p(buffer);
    p.pack_map(1);
    PackStr(p, "events");
    p.pack(3);
    cases.emplace_back("events not an array", Bytes(buffer));
  }
  {
    msgpack::sbuffer buffer;
    Packer p(buffer);
    p.pack_array(1);
    PackStr(p, "yesterday");
    cases.emplace_back("ts a string", Bytes(buffer));
  }
  {
    msgpack::sbuffer buffer;
    Packer p(buffer);
    p.pack_array(3);
    p.pack(1.0);
    p.pack_array(0);
    p.pack(int64_t{1} << 40);
    cases.emplace_back("rank over int32", Bytes(buffer));
  }
  for (const auto& [name, payload] : cases) {
    absl::StatusOr<VllmEventBatch> batch = DecodeVllmEventBatch(payload);
    EXPECT_EQ(batch.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(batch.status().message().find("vLLM event batch"), std::string::npos) << name;
  }
}

TEST(VllmKvEventsTest, SurvivesEveryTruncationAndRandomCorruption) {
  const std::string valid = OneEventBatch(true, [](Packer& p) {
    p.pack_map(6);
    PackStr(p, "type");
    PackStr(p, "BlockStored");
    PackStr(p, "block_hashes");
    p.pack_array(2);
    p.pack(int64_t{-5});
    PackBin(p, "digest");
    PackStr(p, "parent_block_hash");
    p.pack(uint64_t{1} << 63);
    PackStr(p, "token_ids");
    PackInts(p, {1, 2, 300, 70000, 1 << 24, 6});
    PackStr(p, "block_size");
    p.pack(3);
    PackStr(p, "extra_keys");
    p.pack_array(2);
    p.pack_nil();
    p.pack_array(1);
    PackStr(p, "salt");
  });
  ASSERT_TRUE(DecodeVllmEventBatch(valid).ok());
  for (size_t n = 0; n < valid.size(); ++n) {
    EXPECT_FALSE(DecodeVllmEventBatch(valid.substr(0, n)).ok()) << n;
  }
  std::mt19937 rng(7);
  for (int round = 0; round < 20000; ++round) {
    std::string corrupted = valid;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      corrupted[rng() % corrupted.size()] = static_cast<char>(rng());
    }
    // Either result is fine; what matters is an answer without a crash.
    (void)DecodeVllmEventBatch(corrupted);
  }
}

}  // namespace
}  // namespace tern::worker::vllm
