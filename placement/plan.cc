#include "placement/plan.h"

#include <set>
#include <utility>

#include "absl/status/status.h"
#include "base/mapped_file.h"
#include "base/status.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "placement/internal/json_util.h"
#include "placement/plan_schema.h"

namespace tessera::placement {
namespace {

using json = nlohmann::json;
using internal::CheckKeys;

json MetricsToJson(const PredictedMetrics& m) {
  return json{{"request_rate", m.request_rate},
              {"ttft_ms", m.ttft_s * 1e3},
              {"tpot_ms", m.tpot_s * 1e3},
              {"throughput_rps", m.throughput_rps},
              {"output_tokens_per_s", m.output_tokens_per_s},
              {"goodput_rps", m.goodput_rps},
              {"goodput_per_device", m.goodput_per_device},
              {"batch_size", m.batch_size},
              {"weights_per_rank_gb", m.weights_per_rank_bytes / 1e9},
              {"memory_per_rank_gb", m.memory_per_rank_bytes / 1e9},
              {"kv_capacity_tokens", m.kv_capacity_tokens}};
}

absl::StatusOr<PredictedMetrics> MetricsFromJson(const json& j,
                                                 const std::string& w) {
  RETURN_IF_ERROR(CheckKeys(
      j, w,
      {"request_rate", "ttft_ms", "tpot_ms", "throughput_rps",
       "output_tokens_per_s", "goodput_rps", "goodput_per_device", "batch_size",
       "weights_per_rank_gb", "memory_per_rank_gb", "kv_capacity_tokens"}));
  PredictedMetrics m;
  auto num = [&](const char* k, double* out, double scale) -> absl::Status {
    ASSIGN_OR_RETURN(double v, internal::GetNumber(j, w, k, 0, false, false));
    *out = v * scale;
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(num("request_rate", &m.request_rate, 1));
  RETURN_IF_ERROR(num("ttft_ms", &m.ttft_s, 1e-3));
  RETURN_IF_ERROR(num("tpot_ms", &m.tpot_s, 1e-3));
  RETURN_IF_ERROR(num("throughput_rps", &m.throughput_rps, 1));
  RETURN_IF_ERROR(num("output_tokens_per_s", &m.output_tokens_per_s, 1));
  RETURN_IF_ERROR(num("goodput_rps", &m.goodput_rps, 1));
  RETURN_IF_ERROR(num("goodput_per_device", &m.goodput_per_device, 1));
  RETURN_IF_ERROR(num("batch_size", &m.batch_size, 1));
  RETURN_IF_ERROR(num("weights_per_rank_gb", &m.weights_per_rank_bytes, 1e9));
  RETURN_IF_ERROR(num("memory_per_rank_gb", &m.memory_per_rank_bytes, 1e9));
  RETURN_IF_ERROR(num("kv_capacity_tokens", &m.kv_capacity_tokens, 1));
  return m;
}

json ModelToJson(const ModelSpec& m) {
  return json{{"name", m.name},
              {"architecture", m.architecture},
              {"num_layers", m.num_layers},
              {"hidden_size", m.hidden_size},
              {"num_heads", m.num_heads},
              {"num_kv_heads", m.num_kv_heads},
              {"head_dim", m.head_dim},
              {"ffn_size", m.ffn_size},
              {"vocab_size", m.vocab_size},
              {"num_experts", m.num_experts},
              {"experts_per_token", m.experts_per_token},
              {"moe_ffn_size", m.moe_ffn_size},
              {"max_context", m.max_context},
              {"gated_mlp", m.gated_mlp},
              {"tie_embeddings", m.tie_embeddings},
              {"weight_dtype", m.weight_dtype},
              {"kv_dtype", m.kv_dtype}};
}

absl::StatusOr<ModelSpec> ModelFromJson(const json& j) {
  const std::string w = "plan model";
  RETURN_IF_ERROR(CheckKeys(
      j, w,
      {"name", "architecture", "num_layers", "hidden_size", "num_heads",
       "num_kv_heads", "head_dim", "ffn_size", "vocab_size", "num_experts",
       "experts_per_token", "moe_ffn_size", "max_context", "gated_mlp",
       "tie_embeddings", "weight_dtype", "kv_dtype"}));
  ModelSpec m;
  ASSIGN_OR_RETURN(m.name, internal::GetString(j, w, "name", "", true));
  ASSIGN_OR_RETURN(m.architecture,
                   internal::GetString(j, w, "architecture", "", false));
  ASSIGN_OR_RETURN(m.num_layers,
                   internal::GetInt(j, w, "num_layers", 0, true, true));
  ASSIGN_OR_RETURN(m.hidden_size,
                   internal::GetInt(j, w, "hidden_size", 0, true, true));
  ASSIGN_OR_RETURN(m.num_heads,
                   internal::GetInt(j, w, "num_heads", 0, true, true));
  ASSIGN_OR_RETURN(m.num_kv_heads,
                   internal::GetInt(j, w, "num_kv_heads", 0, true, true));
  ASSIGN_OR_RETURN(m.head_dim,
                   internal::GetInt(j, w, "head_dim", 0, true, true));
  ASSIGN_OR_RETURN(m.ffn_size,
                   internal::GetInt(j, w, "ffn_size", 0, true, true));
  ASSIGN_OR_RETURN(m.vocab_size,
                   internal::GetInt(j, w, "vocab_size", 0, true, true));
  ASSIGN_OR_RETURN(m.num_experts,
                   internal::GetInt(j, w, "num_experts", 0, false, false));
  ASSIGN_OR_RETURN(
      m.experts_per_token,
      internal::GetInt(j, w, "experts_per_token", 0, false, false));
  ASSIGN_OR_RETURN(m.moe_ffn_size,
                   internal::GetInt(j, w, "moe_ffn_size", 0, false, false));
  ASSIGN_OR_RETURN(m.max_context,
                   internal::GetInt(j, w, "max_context", 0, true, true));
  m.gated_mlp = j.value("gated_mlp", true);
  m.tie_embeddings = j.value("tie_embeddings", false);
  ASSIGN_OR_RETURN(m.weight_dtype,
                   internal::GetString(j, w, "weight_dtype", "bf16", false));
  ASSIGN_OR_RETURN(m.kv_dtype,
                   internal::GetString(j, w, "kv_dtype", "bf16", false));
  ASSIGN_OR_RETURN(m.weight_bytes, DTypeBytesPerElement(m.weight_dtype));
  ASSIGN_OR_RETURN(m.kv_bytes, DTypeBytesPerElement(m.kv_dtype));
  RETURN_IF_ERROR(ValidateModelSpec(m));
  return m;
}

absl::StatusOr<InstanceRole> ParseRole(const std::string& s) {
  if (s == "prefill") return InstanceRole::kPrefill;
  if (s == "decode") return InstanceRole::kDecode;
  if (s == "both") return InstanceRole::kBoth;
  return absl::InvalidArgumentError(fmt::format(
      "plan: unknown instance role \"{}\" (prefill, decode, both)", s));
}

absl::StatusOr<int> Int(const json& j, const std::string& w, const char* k,
                        bool positive) {
  ASSIGN_OR_RETURN(int64_t v, internal::GetInt(j, w, k, 0, true, positive));
  if (v > (1 << 30))
    return absl::InvalidArgumentError(fmt::format("{}: {} too large", w, k));
  return static_cast<int>(v);
}

absl::StatusOr<PlanInstance> InstanceFromJson(const json& j, int index) {
  const std::string w = fmt::format("plan instance {}", index);
  RETURN_IF_ERROR(CheckKeys(j, w,
                            {"id", "role", "tp", "pp", "ep", "stages", "ranks",
                             "expert_to_ep_rank", "kv_cache", "predicted"}));
  PlanInstance in;
  ASSIGN_OR_RETURN(in.id, Int(j, w, "id", false));
  ASSIGN_OR_RETURN(std::string role,
                   internal::GetString(j, w, "role", "", true));
  ASSIGN_OR_RETURN(in.role, ParseRole(role));
  ASSIGN_OR_RETURN(in.layout.tp, Int(j, w, "tp", true));
  ASSIGN_OR_RETURN(in.layout.pp, Int(j, w, "pp", true));
  ASSIGN_OR_RETURN(in.layout.ep, Int(j, w, "ep", true));
  if (!j.contains("stages") || !j["stages"].is_array()) {
    return absl::InvalidArgumentError(w + ": \"stages\" must be a list");
  }
  for (const json& s : j["stages"]) {
    const std::string ws = w + " stage";
    RETURN_IF_ERROR(CheckKeys(
        s, ws, {"layer_begin", "layer_end", "has_embedding", "has_lm_head"}));
    PlanStage st;
    ASSIGN_OR_RETURN(st.layer_begin, Int(s, ws, "layer_begin", false));
    ASSIGN_OR_RETURN(st.layer_end, Int(s, ws, "layer_end", true));
    st.has_embedding = s.value("has_embedding", false);
    st.has_lm_head = s.value("has_lm_head", false);
    in.stages.push_back(st);
  }
  if (!j.contains("ranks") || !j["ranks"].is_array()) {
    return absl::InvalidArgumentError(w + ": \"ranks\" must be a list");
  }
  for (const json& r : j["ranks"]) {
    const std::string wr = w + " rank";
    RETURN_IF_ERROR(CheckKeys(
        r, wr, {"rank", "node", "device", "tp_rank", "pp_rank", "ep_rank"}));
    PlanRank pr;
    ASSIGN_OR_RETURN(pr.rank, Int(r, wr, "rank", false));
    ASSIGN_OR_RETURN(pr.node, Int(r, wr, "node", false));
    ASSIGN_OR_RETURN(pr.device, Int(r, wr, "device", false));
    ASSIGN_OR_RETURN(pr.tp_rank, Int(r, wr, "tp_rank", false));
    ASSIGN_OR_RETURN(pr.pp_rank, Int(r, wr, "pp_rank", false));
    ASSIGN_OR_RETURN(pr.ep_rank, Int(r, wr, "ep_rank", false));
    in.ranks.push_back(pr);
  }
  if (j.contains("expert_to_ep_rank")) {
    if (!j["expert_to_ep_rank"].is_array()) {
      return absl::InvalidArgumentError(w +
                                        ": expert_to_ep_rank must be a list");
    }
    for (const json& e : j["expert_to_ep_rank"]) {
      if (!e.is_number_integer()) {
        return absl::InvalidArgumentError(
            w + ": expert_to_ep_rank entries must be integers");
      }
      in.expert_to_ep_rank.push_back(e.get<int>());
    }
  }
  if (!j.contains("kv_cache"))
    return absl::InvalidArgumentError(w + ": missing \"kv_cache\"");
  const json& kv = j["kv_cache"];
  const std::string wk = w + " kv_cache";
  RETURN_IF_ERROR(
      CheckKeys(kv, wk,
                {"block_size", "num_blocks", "dtype", "max_num_seqs",
                 "max_model_len", "max_num_batched_tokens"}));
  ASSIGN_OR_RETURN(in.kv_cache.block_size, Int(kv, wk, "block_size", true));
  ASSIGN_OR_RETURN(in.kv_cache.num_blocks,
                   internal::GetInt(kv, wk, "num_blocks", 0, true, true));
  ASSIGN_OR_RETURN(in.kv_cache.dtype,
                   internal::GetString(kv, wk, "dtype", "bf16", false));
  ASSIGN_OR_RETURN(in.kv_cache.max_num_seqs,
                   internal::GetInt(kv, wk, "max_num_seqs", 0, true, true));
  ASSIGN_OR_RETURN(in.kv_cache.max_model_len,
                   internal::GetInt(kv, wk, "max_model_len", 0, true, true));
  ASSIGN_OR_RETURN(
      in.kv_cache.max_num_batched_tokens,
      internal::GetInt(kv, wk, "max_num_batched_tokens", 0, true, true));
  RETURN_IF_ERROR(DTypeBytesPerElement(in.kv_cache.dtype).status());
  if (j.contains("predicted")) {
    ASSIGN_OR_RETURN(in.predicted,
                     MetricsFromJson(j["predicted"], w + " predicted"));
  }
  return in;
}

}  // namespace

const char* RoleName(InstanceRole role) {
  switch (role) {
    case InstanceRole::kPrefill:
      return "prefill";
    case InstanceRole::kDecode:
      return "decode";
    case InstanceRole::kBoth:
      return "both";
  }
  return "both";
}

int Plan::num_ranks() const {
  int n = 0;
  for (const PlanInstance& in : instances)
    n += static_cast<int>(in.ranks.size());
  return n;
}

absl::Status ValidatePlan(const Plan& plan) {
  if (plan.schema_version != kPlanSchemaVersion) {
    return absl::InvalidArgumentError(
        fmt::format("plan schema version {} (this build reads {})",
                    plan.schema_version, kPlanSchemaVersion));
  }
  if (plan.mode != "colocated" && plan.mode != "disaggregated") {
    return absl::InvalidArgumentError(fmt::format(
        "plan: unknown mode \"{}\" (colocated, disaggregated)", plan.mode));
  }
  RETURN_IF_ERROR(ValidateModelSpec(plan.model));
  RETURN_IF_ERROR(ValidateDeviceProfile(plan.cluster.device));
  if (plan.instances.empty())
    return absl::InvalidArgumentError("plan: no instances");
  std::set<std::pair<int, int>> devices;
  std::set<int> ranks;
  bool has_prefill = false, has_decode = false;
  const ModelSpec& m = plan.model;
  for (size_t i = 0; i < plan.instances.size(); ++i) {
    const PlanInstance& in = plan.instances[i];
    const std::string w = fmt::format("plan instance {}", in.id);
    const Layout& l = in.layout;
    has_prefill = has_prefill || in.role == InstanceRole::kPrefill;
    has_decode = has_decode || in.role == InstanceRole::kDecode;
    if (m.num_heads % l.tp != 0) {
      return absl::InvalidArgumentError(
          fmt::format("{}: tp {} does not divide {} attention heads", w, l.tp,
                      m.num_heads));
    }
    if (l.tp % l.ep != 0 ||
        (l.ep > 1 && (!m.is_moe() || m.num_experts % l.ep != 0))) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: ep {} must divide tp {} and the expert count", w, l.ep, l.tp));
    }
    if (static_cast<int>(in.stages.size()) != l.pp) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: {} stages listed for pp {}", w, in.stages.size(), l.pp));
    }
    int next = 0;
    for (size_t s = 0; s < in.stages.size(); ++s) {
      const PlanStage& st = in.stages[s];
      if (st.layer_begin != next || st.layer_end <= st.layer_begin) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: stage {} covers layers [{}, {}), expected to start at {}", w,
            s, st.layer_begin, st.layer_end, next));
      }
      if (st.has_embedding != (s == 0) ||
          st.has_lm_head != (s + 1 == in.stages.size())) {
        return absl::InvalidArgumentError(
            fmt::format("{}: the embedding belongs to the first stage and the "
                        "LM head to the last",
                        w));
      }
      next = st.layer_end;
    }
    if (next != m.num_layers) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: stages cover {} of {} layers", w, next, m.num_layers));
    }
    if (static_cast<int>(in.ranks.size()) != l.size()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: {} ranks listed for tp {} × pp {}", w,
                      in.ranks.size(), l.tp, l.pp));
    }
    for (int r = 0; r < l.size(); ++r) {
      const PlanRank& pr = in.ranks[r];
      if (pr.tp_rank != r % l.tp || pr.pp_rank != r / l.tp ||
          pr.ep_rank != pr.tp_rank / l.etp()) {
        return absl::InvalidArgumentError(
            fmt::format("{}: rank {} has coordinates tp {} pp {} ep {}; "
                        "expected tp {} pp {} ep {} "
                        "(tp innermost)",
                        w, pr.rank, pr.tp_rank, pr.pp_rank, pr.ep_rank,
                        r % l.tp, r / l.tp, (r % l.tp) / l.etp()));
      }
      if (pr.node >= plan.cluster.num_nodes() ||
          pr.device >= plan.cluster.devices_per_node) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: rank {} on node {} device {} is outside the cluster ({} × {})",
            w, pr.rank, pr.node, pr.device, plan.cluster.num_nodes(),
            plan.cluster.devices_per_node));
      }
      if (!devices.insert({pr.node, pr.device}).second) {
        return absl::InvalidArgumentError(
            fmt::format("{}: node {} device {} is used by two ranks", w,
                        pr.node, pr.device));
      }
      if (!ranks.insert(pr.rank).second) {
        return absl::InvalidArgumentError(
            fmt::format("{}: global rank {} repeated", w, pr.rank));
      }
    }
    if (m.is_moe()) {
      if (static_cast<int64_t>(in.expert_to_ep_rank.size()) != m.num_experts) {
        return absl::InvalidArgumentError(
            fmt::format("{}: expert_to_ep_rank lists {} of {} experts", w,
                        in.expert_to_ep_rank.size(), m.num_experts));
      }
      std::vector<int> per_rank(l.ep, 0);
      for (int owner : in.expert_to_ep_rank) {
        if (owner < 0 || owner >= l.ep) {
          return absl::InvalidArgumentError(
              fmt::format("{}: expert owner {} outside ep {}", w, owner, l.ep));
        }
        ++per_rank[owner];
      }
      for (int c : per_rank) {
        if (c != m.num_experts / l.ep) {
          return absl::InvalidArgumentError(
              fmt::format("{}: every ep rank must own {} experts", w,
                          m.num_experts / l.ep));
        }
      }
    } else if (!in.expert_to_ep_rank.empty()) {
      return absl::InvalidArgumentError(
          w + ": expert_to_ep_rank given for a dense model");
    }
  }
  if (static_cast<int>(ranks.size()) != plan.num_ranks() ||
      (!ranks.empty() && *ranks.rbegin() != plan.num_ranks() - 1)) {
    return absl::InvalidArgumentError("plan: global ranks must be 0..N-1");
  }
  if ((plan.mode == "disaggregated") != (has_prefill || has_decode) ||
      (plan.mode == "disaggregated" && !(has_prefill && has_decode))) {
    return absl::InvalidArgumentError(
        "plan: a disaggregated plan needs prefill and decode instances (and no "
        "\"both\"); a colocated plan only \"both\" instances");
  }
  return absl::OkStatus();
}

std::string PlanToJson(const Plan& plan) {
  json instances = json::array();
  for (const PlanInstance& in : plan.instances) {
    json stages = json::array();
    for (const PlanStage& s : in.stages) {
      stages.push_back({{"layer_begin", s.layer_begin},
                        {"layer_end", s.layer_end},
                        {"has_embedding", s.has_embedding},
                        {"has_lm_head", s.has_lm_head}});
    }
    json ranks = json::array();
    for (const PlanRank& r : in.ranks) {
      ranks.push_back({{"rank", r.rank},
                       {"node", r.node},
                       {"device", r.device},
                       {"tp_rank", r.tp_rank},
                       {"pp_rank", r.pp_rank},
                       {"ep_rank", r.ep_rank}});
    }
    json ji{{"id", in.id},
            {"role", RoleName(in.role)},
            {"tp", in.layout.tp},
            {"pp", in.layout.pp},
            {"ep", in.layout.ep},
            {"stages", stages},
            {"ranks", ranks},
            {"kv_cache",
             {{"block_size", in.kv_cache.block_size},
              {"num_blocks", in.kv_cache.num_blocks},
              {"dtype", in.kv_cache.dtype},
              {"max_num_seqs", in.kv_cache.max_num_seqs},
              {"max_model_len", in.kv_cache.max_model_len},
              {"max_num_batched_tokens", in.kv_cache.max_num_batched_tokens}}},
            {"predicted", MetricsToJson(in.predicted)}};
    if (!in.expert_to_ep_rank.empty())
      ji["expert_to_ep_rank"] = in.expert_to_ep_rank;
    instances.push_back(std::move(ji));
  }
  json cluster{
      {"nodes", plan.cluster.hosts},
      {"devices_per_node", plan.cluster.devices_per_node},
      {"device", json::parse(DeviceProfileToJson(plan.cluster.device))}};
  json j{{"schema", PlanSchemaName()},
         {"schema_version", plan.schema_version},
         {"mode", plan.mode},
         {"model", ModelToJson(plan.model)},
         {"cluster", cluster},
         {"workload", json::parse(WorkloadToJson(plan.workload))},
         {"instances", instances},
         {"predicted", MetricsToJson(plan.predicted)},
         {"rationale", plan.rationale}};
  return j.dump(2) + "\n";
}

absl::StatusOr<Plan> ParsePlan(std::string_view json_text) {
  ASSIGN_OR_RETURN(json j, internal::ParseJsonObject(json_text, "plan"));
  RETURN_IF_ERROR(
      CheckKeys(j, "plan",
                {"schema", "schema_version", "mode", "model", "cluster",
                 "workload", "instances", "predicted", "rationale"}));
  Plan p;
  ASSIGN_OR_RETURN(
      int64_t version,
      internal::GetInt(j, "plan", "schema_version", 0, true, true));
  if (version != kPlanSchemaVersion) {
    return absl::InvalidArgumentError(fmt::format(
        "plan schema version {} is not supported (this build reads {})",
        version, kPlanSchemaVersion));
  }
  p.schema_version = static_cast<int>(version);
  ASSIGN_OR_RETURN(
      std::string schema,
      internal::GetString(j, "plan", "schema", PlanSchemaName(), false));
  if (schema != PlanSchemaName()) {
    return absl::InvalidArgumentError(fmt::format(
        "plan: schema \"{}\", expected \"{}\"", schema, PlanSchemaName()));
  }
  ASSIGN_OR_RETURN(p.mode, internal::GetString(j, "plan", "mode", "", true));
  if (!j.contains("model"))
    return absl::InvalidArgumentError("plan: missing \"model\"");
  ASSIGN_OR_RETURN(p.model, ModelFromJson(j["model"]));
  if (!j.contains("cluster"))
    return absl::InvalidArgumentError("plan: missing \"cluster\"");
  {
    auto c = ParseCluster(j["cluster"].dump());
    if (!c.ok()) return Annotate(c.status(), "plan");
    p.cluster = *std::move(c);
  }
  if (j.contains("workload")) {
    auto w = ParseWorkload(j["workload"].dump());
    if (!w.ok()) return Annotate(w.status(), "plan");
    p.workload = *std::move(w);
  } else {
    p.workload = DefaultWorkload();
  }
  if (!j.contains("instances") || !j["instances"].is_array()) {
    return absl::InvalidArgumentError("plan: \"instances\" must be a list");
  }
  int index = 0;
  for (const json& ji : j["instances"]) {
    ASSIGN_OR_RETURN(PlanInstance in, InstanceFromJson(ji, index++));
    p.instances.push_back(std::move(in));
  }
  if (j.contains("predicted")) {
    ASSIGN_OR_RETURN(p.predicted,
                     MetricsFromJson(j["predicted"], "plan predicted"));
  }
  ASSIGN_OR_RETURN(p.rationale,
                   internal::GetString(j, "plan", "rationale", "", false));
  RETURN_IF_ERROR(ValidatePlan(p));
  return p;
}

absl::StatusOr<Plan> LoadPlan(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto p = ParsePlan(text);
  if (!p.ok()) return Annotate(p.status(), path);
  return p;
}

absl::Status WritePlan(const Plan& plan, const std::string& path) {
  RETURN_IF_ERROR(ValidatePlan(plan));
  return WriteStringToFile(path, PlanToJson(plan));
}

}  // namespace tessera::placement
