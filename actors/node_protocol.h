// For the users of the old header: the node protocol (now actors/protocol/node.h) and,
// as it always brought them along, every other message (actors/messages.h).
#pragma once

#include "actors/messages.h"
#include "actors/protocol/node.h"
