// Flavors: named virtual accelerators (being written).
#pragma once
