#include "comm/kv_transfer.h"

#include "base/build_config.h"

namespace tessera::comm {

#if TESSERA_HAVE_UCX
namespace internal {
absl::StatusOr<std::unique_ptr<KvTransferEngine>> CreateUcxEngine(
    int rank, Store* store, const KvTransferOptions& options);
}  // namespace internal
#endif

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
