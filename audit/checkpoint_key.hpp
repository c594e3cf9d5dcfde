#pragma once
// Ed25519 keys for signed checkpoints (keyed mode). The private key stays with the
// writer (outside the agent's reach); auditors verify with the public key.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace runwarden::audit {

class CheckpointKey {
public:
  /// A private key from PEM text, or from a file when the text is not PEM. Throws
  /// std::runtime_error (start-up only) when it is not an Ed25519 key.
  static std::unique_ptr<CheckpointKey> load_private(std::string_view pem_or_path);
  /// A public (or private) key for verification, same rules.
  static std::unique_ptr<CheckpointKey> load_public(std::string_view pem_or_path);
  /// Writes a new key pair (private 0600). Throws on I/O failure.
  static void generate(const std::string& private_path, const std::string& public_path);
  ~CheckpointKey();
  CheckpointKey(const CheckpointKey&) = delete;
  CheckpointKey& operator=(const CheckpointKey&) = delete;

  /// The bytes a checkpoint signs: the chain head it vouches for.
  static std::string message(std::uint64_t head_seq, std::string_view head_hash);
  /// Hex signature of message(head_seq, head_hash); empty on failure.
  std::string sign(std::uint64_t head_seq, std::string_view head_hash) const;
  bool verify(std::uint64_t head_seq, std::string_view head_hash, std::string_view sig_hex) const;
  /// First 16 hex of SHA-256 of the raw public key: names the key in each checkpoint.
  const std::string& key_id() const { return key_id_; }

private:
  explicit CheckpointKey(void* pkey);
  void* pkey_; // EVP_PKEY*
  std::string key_id_;
};

} // namespace runwarden::audit
