// Every message the actors of one deployment exchange, one header per protocol under
// actors/protocol/ (each says who sends what to whom, and which of its types cross
// processes); this header is for the users that want them all. Include only from actor
// sources: CAF headers compile slowly.
#pragma once

#include "actors/protocol/control.h"
#include "actors/protocol/layer_batch_key.h"
#include "actors/protocol/layer_exchange.h"
#include "actors/protocol/membership.h"
#include "actors/protocol/scaling.h"
#include "actors/protocol/status.h"
#include "actors/protocol/step.h"
