-- Argo CD health for secrets.ameide.io/SecretBundle (Lua 5.1, as Argo CD runs it: base and
-- table libraries only, so no string.*). Reads only the kstatus conditions the operator writes.
-- Waiting for something absent (a namespace, the ESO CRDs, a dependency, a store) is idle, not
-- unhealthy: it is Healthy with a message saying what it waits for, so sync waves and parent
-- Applications move on. Only Stalled (something wrong) is Degraded.
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

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

-- A status written for an older generation says nothing about the current spec.
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

if isTrue(ready) then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

-- Something is wrong: a failing secret sync, a rejected apply, a cycle, a conflict, a store
-- that refuses the namespace, an invalid spec.
local stalled = condition("Stalled")
if isTrue(stalled) then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end

-- Work under way: ESO is syncing the secrets or validating the store.
local reconciling = condition("Reconciling")
if isTrue(reconciling) then
  hs.status = "Progressing"
  hs.message = reconciling.message or (ready ~= nil and ready.message) or ""
  return hs
end

-- Ready=False and nothing under way or wrong: idle until what it waits for appears.
if ready ~= nil and ready.status == "False" then
  hs.status = "Healthy"
  hs.message = "Idle, waiting (" .. (ready.reason or "") .. "): " .. (ready.message or "")
  return hs
end

hs.status = "Progressing"
hs.message = "Waiting for the controller"
return hs
