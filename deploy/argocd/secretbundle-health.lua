-- Argo CD health for secrets.ameide.io/SecretBundle (Lua 5.1, as Argo CD runs it).
-- Reads only the kstatus conditions the operator writes. A status written for an older
-- generation says nothing about the current spec, so it is never trusted.
local hs = {}

local function condition(wanted)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe the latest generation"
  return hs
end

local ready = condition("Ready")

-- Someone asked for nothing to happen: not healthy, not broken.
if (obj.spec ~= nil and obj.spec.suspend == true) or (ready ~= nil and ready.reason == "Suspended") then
  hs.status = "Suspended"
  hs.message = (ready ~= nil and ready.message) or "spec.suspend is true"
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

-- Stalled: only a change by a person helps (cycle, conflict, store not allowed, invalid spec).
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end

-- Waiting for a namespace, the ESO CRDs, a dependency, a store, or ESO itself.
hs.status = "Progressing"
hs.message = (ready ~= nil and ready.message) or "Waiting for the controller"
return hs
