#include "vacc/launch/flavor.h"
