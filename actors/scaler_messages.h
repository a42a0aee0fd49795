// What the Scaler, the Frontend and the Deployment say to each other, for the users of
// the old single header: the membership protocol (actors/protocol/membership.h) and the
// scaling protocol (actors/protocol/scaling.h).
#pragma once

#include "actors/protocol/membership.h"
#include "actors/protocol/scaling.h"
