-- Two ways to account for a lane's slots, reduced to what the hot path does: claim an admitted
-- job, then end it, releasing its slot and admitting the next waiting job in one transaction.
-- Both serialise admission per lane on a lane row (strict FIFO needs it); they differ in how the
-- slots themselves are recorded.

drop schema if exists bench_counter cascade;
drop schema if exists bench_slots cascade;
create schema bench_counter;
create schema bench_slots;

-- Design A: one counter per lane.
create table bench_counter.lanes (lane int primary key, threshold int not null, active int not null check (active >= 0));
create table bench_counter.jobs (id bigint generated always as identity primary key, lane int not null, status text not null);
create index on bench_counter.jobs (lane, id) where status = 'requested';
create index on bench_counter.jobs (id) where status = 'scheduled';

create function bench_counter.admit(p_lane int) returns void language plpgsql as $$
declare v_free int;
begin
  select threshold - active into v_free from bench_counter.lanes where lane = p_lane;
  if v_free <= 0 then return; end if;
  with next as (
    select id from bench_counter.jobs where lane = p_lane and status = 'requested' order by id limit v_free for update
  ), admitted as (
    update bench_counter.jobs j set status = 'scheduled' from next where j.id = next.id returning j.id
  )
  update bench_counter.lanes set active = active + (select count(*) from admitted) where lane = p_lane;
end $$;

create function bench_counter.complete(p_id bigint) returns void language plpgsql as $$
declare v_lane int;
begin
  select lane into v_lane from bench_counter.jobs where id = p_id;
  perform 1 from bench_counter.lanes where lane = v_lane for update;
  update bench_counter.jobs set status = 'done' where id = p_id and status = 'running';
  update bench_counter.lanes set active = active - 1 where lane = v_lane;
  perform bench_counter.admit(v_lane);
end $$;

create function bench_counter.claim() returns bigint language sql as $$
  update bench_counter.jobs j set status = 'running'
  where j.id = (select id from bench_counter.jobs where status = 'scheduled' order by id limit 1 for update skip locked)
  returning j.id
$$;

-- Design B: one row per slot, holding the job that occupies it.
create table bench_slots.lanes (lane int primary key);
create table bench_slots.slots (lane int not null, slot int not null, holder bigint, primary key (lane, slot));
create index on bench_slots.slots (holder) where holder is not null;
create table bench_slots.jobs (id bigint generated always as identity primary key, lane int not null, status text not null);
create index on bench_slots.jobs (lane, id) where status = 'requested';
create index on bench_slots.jobs (id) where status = 'scheduled';

create function bench_slots.admit(p_lane int) returns void language plpgsql as $$
declare v_slot int; v_job bigint;
begin
  for v_slot in select slot from bench_slots.slots where lane = p_lane and holder is null order by slot for update loop
    select id into v_job from bench_slots.jobs where lane = p_lane and status = 'requested' order by id limit 1 for update;
    exit when v_job is null;
    update bench_slots.jobs set status = 'scheduled' where id = v_job;
    update bench_slots.slots set holder = v_job where lane = p_lane and slot = v_slot;
  end loop;
end $$;

create function bench_slots.complete(p_id bigint) returns void language plpgsql as $$
declare v_lane int;
begin
  select lane into v_lane from bench_slots.jobs where id = p_id;
  perform 1 from bench_slots.lanes where lane = v_lane for update;
  update bench_slots.jobs set status = 'done' where id = p_id and status = 'running';
  update bench_slots.slots set holder = null where lane = v_lane and holder = p_id;
  perform bench_slots.admit(v_lane);
end $$;

create function bench_slots.claim() returns bigint language sql as $$
  update bench_slots.jobs j set status = 'running'
  where j.id = (select id from bench_slots.jobs where status = 'scheduled' order by id limit 1 for update skip locked)
  returning j.id
$$;
