-- Argo CD health of an oms.dev OrderSystem (resource.customizations.health.oms.dev_OrderSystem).
-- Healthy: Ready is True for the current generation. Suspended: paused. Degraded: the operator
-- reports a problem. Progressing: anything else, such as a generation not yet observed.
local hs = {}

local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local generation = obj.metadata.generation
local annotations = obj.metadata.annotations
local status = obj.status

if annotations ~= nil and annotations["oms.dev/paused"] == "true" then
  hs.status = "Suspended"
  hs.message = "Reconciliation is paused (annotation oms.dev/paused)"
  return hs
end

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

-- A condition describes the spec only if it carries the current generation.
local function current(kind)
  local condition = find(status.conditions, kind)
  if condition == nil then
    return nil
  end
  if generation ~= nil and condition.observedGeneration ~= nil and condition.observedGeneration < generation then
    return nil
  end
  return condition
end

local paused = current("ReconciliationPaused")
if paused ~= nil and paused.status == "True" then
  hs.status = "Suspended"
  hs.message = paused.message or "Reconciliation is paused"
  return hs
end

local degraded = current("Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = (degraded.reason or "Degraded") .. ": " .. (degraded.message or "")
  return hs
end

local ready = current("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end

local progressing = current("Progressing")
hs.status = "Progressing"
if progressing ~= nil and progressing.message ~= nil then
  hs.message = progressing.message
elseif ready ~= nil and ready.message ~= nil then
  hs.message = ready.message
else
  hs.message = "Waiting for the OrderSystem to become Ready"
end
return hs
