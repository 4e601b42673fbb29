#include "comm/kv_transfer.h"

#include "base/build_config.h"
#include "base/status.h"

namespace tessera::comm {

#if TESSERA_HAVE_UCX
namespace internal {
absl::StatusOr<std::unique_ptr<KvTransferEngine>> CreateUcxEngine(
    int rank, Store* store, const KvTransferOptions& options);
}  // namespace internal
#endif

absl::Status KvTransferEngine::Transfer(int peer, uint64_t request_id,
                                        std::span<const BlockCopy> blocks,
                                        std::chrono::milliseconds timeout) {
  RETURN_IF_ERROR(PostTransfer(peer, request_id, blocks, timeout));
  return WaitTransfer(request_id);
}

absl::StatusOr<std::unique_ptr<KvTransferEngine>> KvTransferEngine::Create(
    int rank, Store* store, const KvTransferOptions& options) {
  if (store == nullptr) {
    return absl::InvalidArgumentError("KV transfer engine needs a store");
  }
#if TESSERA_HAVE_UCX
  return internal::CreateUcxEngine(rank, store, options);
#else
  (void)rank;
  (void)options;
  return absl::UnimplementedError(
      "KV transfer needs UCX; tessera was built without it");
#endif
}

}  // namespace tessera::comm
