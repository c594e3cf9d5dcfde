#pragma once
// Packets for registry tests: only the fields the registry reads.

#include "approval/approval_packet.hpp"

#include <string>

namespace runwarden::approval::test {

inline ApprovalPacket packet(std::string run, std::string digest = "d1") {
  ApprovalPacket p;
  p.run = std::move(run);
  p.agent = "agent-1";
  p.action = "restart_payment_workers";
  p.digest = std::move(digest);
  return p;
}

} // namespace runwarden::approval::test
